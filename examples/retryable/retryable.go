// Package retryable shows how to retry Norman API requests with
// [github.com/hashicorp/go-retryablehttp] and a [norman.Transport].
//
// The norman.Transport goes under the retrying client, as
// retryablehttp.Client.HTTPClient.Transport, and not over it:
//
//	retryablehttp.Client          retries, backs off, replays the body
//	  └─ http.Client
//	       └─ norman.Transport    adds the current token to each attempt
//	            └─ http.Transport sends the request
//
// In this order every attempt passes through the norman.Transport on its own.
// An attempt that starts after the token has expired, for example after a
// long backoff, gets a fresh token, where a transport above retryablehttp
// would have set the header once and sent the same dead token on every
// attempt. retryablehttp rewinds the request body before each attempt, so
// the norman.Transport always receives the whole body. It also sets
// GetBody, which lets the norman.Transport send the body again when the API
// responds 401 and the transport logs in again.
//
// Set the client's CheckRetry to [norman.CheckRetry]. retryablehttp's
// default policy retries most transport errors, and so also the errors of
// the norman.Transport that no retry can heal. These are an API key that
// the server rejected, a missing API key or base URL, and a request that
// would send a token over plain HTTP to a host that is not a loopback
// address. norman.CheckRetry returns them at once and leaves everything
// else, such as 5xx responses and network errors, to
// [retryablehttp.DefaultRetryPolicy].
//
// The norman.Transport handles a 401 from the API itself, with one login
// and one resend, so retryablehttp never needs to retry a 401, and its
// default policy does not.
package retryable

import (
	"github.com/hashicorp/go-retryablehttp"
	norman "github.com/norman-ml/norman-go"
)

// NewClient returns a retryablehttp client with its default settings, whose
// requests get mgr's access token. The norman.Transport wraps the pooled
// transport that retryablehttp would have used, and CheckRetry is
// [norman.CheckRetry].
//
// Like any retryablehttp client, it logs each request to standard error
// through the standard log package. Set Logger to nil to turn that off, or
// to a [log/slog.Logger], which retryablehttp accepts as a LeveledLogger.
func NewClient(mgr *norman.Manager) *retryablehttp.Client {
	client := retryablehttp.NewClient()
	client.HTTPClient.Transport = norman.NewTransport(mgr, client.HTTPClient.Transport)
	client.CheckRetry = norman.CheckRetry
	return client
}
