package norman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/go-retryablehttp"
)

// Transport is an [http.RoundTripper] that sends the [Manager]'s access
// token with every request to the Norman API, logging in when the token is
// missing or expired.
//
// Only requests whose scheme, host and port match the base URL, or an origin
// named with [WithAllowedOrigins], get the token. Any other request, such as
// a redirect to another host, passes through unchanged. While the manager's
// base URL or origins are invalid, every request fails with that error
// instead. On requests to the API the transport owns the Authorization
// header and replaces any value already there.
//
// When the API answers 401 to a request, the transport logs in once more
// and retries the request once, if its body can be replayed (it has GetBody,
// or no body). A second 401 goes back to the caller.
//
// A Transport is safe for concurrent use. It does not modify the caller's
// request: it sends a copy with a header map of its own, whose value slices
// it shares with the caller's request, since no RoundTripper may change
// them.
type Transport struct {
	// Manager supplies the tokens. It must not be nil.
	Manager *Manager

	// Base sends the requests. If nil, http.DefaultTransport is used.
	Base http.RoundTripper
}

// NewTransport returns a Transport that adds m's access token to requests
// and sends them through base. A nil base means [http.DefaultTransport].
func NewTransport(m *Manager, base http.RoundTripper) *Transport {
	return &Transport{Manager: m, Base: base}
}

// RoundTrip implements [http.RoundTripper]. It returns an error, without
// sending anything, if the request is for the API and no valid token can be
// had, or if it would carry the token over plain HTTP to a host that is not
// a loopback address.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	m, err := t.check(req)
	if err != nil {
		closeRequestBody(req)
		return nil, err
	}
	if !m.isAPIOrigin(req.URL) {
		return t.base().RoundTrip(req)
	}
	st, err := m.validState(req.Context())
	if err != nil {
		closeRequestBody(req)
		return nil, err
	}
	return t.send(req, st)
}

// check returns the Manager of t, or the error that keeps t from sending
// req.
func (t *Transport) check(req *http.Request) (*Manager, error) {
	m := t.Manager
	switch {
	case m == nil:
		return nil, errors.New("norman: Transport has no Manager: create it with NewTransport")
	case m.now == nil:
		return nil, errZeroManager
	case req.URL == nil:
		return nil, errors.New("norman: request has no URL")
	case m.configErr != nil:
		// Without a valid base URL no request can be matched to the API, and
		// sending them all without a token would only hide the mistake.
		return nil, m.configErr
	}
	return m, nil
}

// send sends req with the token of st, and handles a 401 for that token.
func (t *Transport) send(req *http.Request, st *tokenState) (*http.Response, error) {
	resp, err := t.base().RoundTrip(withAuthorization(req, st))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	return t.retryUnauthorized(req, st, resp)
}

// closeRequestBody closes the body of a request that RoundTrip does not
// send, as the [http.RoundTripper] contract requires.
func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// retryUnauthorized handles a 401 for the token in st: it gets a new token
// and sends req once more, or returns the 401 response when no new token can
// be had or the body cannot be replayed. A newer token that was already
// cached, rather than fetched for this 401, may have been revoked too: if
// it also gets a 401, one login is made for it and req is sent a last time.
func (t *Transport) retryUnauthorized(req *http.Request, st *tokenState, resp *http.Response) (*http.Response, error) {
	m := t.Manager
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil

	for attempt := 1; ; attempt++ {
		m.log().Warn("norman: API rejected the access token; logging in again",
			"method", req.Method, "url", redactURL(req.URL), "account_id", st.accountID)
		fresh, loggedIn, err := m.refreshAfterUnauthorized(req.Context(), st)
		if ctxErr := req.Context().Err(); ctxErr != nil {
			discard(resp)
			return nil, ctxErr
		}
		if err != nil {
			m.log().Warn("norman: no new token after a 401; returning the response", "error", err)
			return resp, nil
		}

		// The new token serves the requests that follow even when this one,
		// whose body is gone, cannot be sent again.
		if !replayable {
			return resp, nil
		}
		retry := withAuthorization(req, fresh)
		if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
			body, err := req.GetBody()
			if err != nil {
				m.log().Warn("norman: cannot replay the request body; returning the 401 response", "error", err)
				return resp, nil
			}
			retry.Body = body
		}

		discard(resp)
		resp, err = t.base().RoundTrip(retry)
		if err != nil || resp.StatusCode != http.StatusUnauthorized || loggedIn || attempt == 2 {
			return resp, err
		}
		st = fresh
	}
}

// String describes the transport without secrets: the manager's
// description and the type of the base transport, whose fields (proxy
// headers, for instance) are not printed.
func (t Transport) String() string {
	manager := "nil"
	if t.Manager != nil {
		manager = t.Manager.String()
	}
	return "norman.Transport{Manager: " + manager + ", Base: " + t.baseName() + "}"
}

// baseName names the base transport by its type only.
func (t Transport) baseName() string {
	if t.Base == nil {
		return "http.DefaultTransport"
	}
	return fmt.Sprintf("%T", t.Base)
}

// GoString returns the same description as String.
func (t Transport) GoString() string { return t.String() }

// Format writes the description of String for every verb, quoted for %q.
// It has a value receiver so that a Transport held by value in another
// struct prints the same way.
func (t Transport) Format(f fmt.State, verb rune) { writeDescription(f, verb, t.String()) }

// LogValue implements [slog.LogValuer], logging the manager and the type of
// the base transport.
func (t Transport) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("base", t.baseName())}
	if t.Manager != nil {
		attrs = append(attrs, slog.Any("manager", t.Manager))
	}
	return slog.GroupValue(attrs...)
}

// CloseIdleConnections closes the idle connections of the base transport,
// if it has such a method, so that [http.Client.CloseIdleConnections]
// reaches through the Transport.
func (t *Transport) CloseIdleConnections() {
	if closer, ok := t.base().(interface{ CloseIdleConnections() }); ok {
		closer.CloseIdleConnections()
	}
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// withAuthorization returns a shallow copy of req with its own header map,
// in which the bearer token of st is the only Authorization value. Only the
// map is copied: the value slices, and the Authorization value built once
// per login, are shared, because no RoundTripper may modify them.
func withAuthorization(req *http.Request, st *tokenState) *http.Request {
	header := maps.Clone(req.Header)
	if header == nil {
		header = make(http.Header, 1)
	}
	for key := range header {
		if len(key) == len("Authorization") && key != "Authorization" && strings.EqualFold(key, "Authorization") {
			delete(header, key)
		}
	}
	header["Authorization"] = st.bearer.Value()

	r := new(http.Request)
	*r = *req
	r.Header = header
	return r
}

// discard drains a little of resp's body, so that the connection can be
// reused, and closes it.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}

// origin is a scheme, host and port that requests are matched against.
type origin struct {
	scheme   string // "http" or "https"
	host     string // lower case, without brackets
	port     string // explicit, such as "443"
	hostPort string // the host as the URL writes it, such as "API.example.com" or "[::1]:8080"
}

// isAPIOrigin reports whether requests to u get the access token. Every
// origin passed checkSecure when the manager was created, so a match is
// never plain HTTP to a remote host.
func (m *Manager) isAPIOrigin(u *url.URL) bool {
	for i := range m.origins {
		if m.origins[i].matches(u) {
			return true
		}
	}
	return false
}

func (o *origin) matches(u *url.URL) bool {
	if !strings.EqualFold(u.Scheme, o.scheme) {
		return false
	}
	// Most requests write the host as the base URL does, which needs no
	// splitting of host and port.
	if u.Host == o.hostPort {
		return true
	}
	return strings.EqualFold(u.Hostname(), o.host) && portOf(u) == o.port
}

// portOf returns u's port, or the scheme's default port.
func portOf(u *url.URL) string {
	if port := u.Port(); port != "" {
		return port
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return "443"
	case "http":
		return "80"
	}
	return ""
}

func newOrigin(u *url.URL) origin {
	return origin{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Hostname()), port: portOf(u), hostPort: u.Host}
}

// parseOrigins returns the base URL's origin followed by the extra origins,
// each written "scheme://host[:port]".
func parseOrigins(base *url.URL, extra []string) ([]origin, error) {
	origins := []origin{newOrigin(base)}
	for _, raw := range extra {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			// The parser's message may quote a password, so it is not passed on.
			return nil, newConfigError("norman: invalid allowed origin: malformed URL: want scheme://host or scheme://host:port, such as https://files.example.com")
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return nil, newConfigError("norman: invalid allowed origin %q: want scheme://host or scheme://host:port, such as https://files.example.com", redactURL(u))
		}
		if err := checkSecure(u); err != nil {
			return nil, err
		}
		origins = append(origins, newOrigin(u))
	}
	return origins, nil
}

// checkSecure rejects plain HTTP to any host but a loopback address.
func checkSecure(u *url.URL) error {
	if !strings.EqualFold(u.Scheme, "http") || isLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("%w to %s: use https, or a loopback address for local testing", ErrInsecureURL, redactURL(&url.URL{Scheme: u.Scheme, Host: u.Host}))
}

// isLoopback reports whether host is "localhost" or a loopback IP address.
// It does not resolve names, so a name that merely points at 127.0.0.1 does
// not count.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckRetry is a [retryablehttp.CheckRetry] for a [retryablehttp.Client]
// whose HTTPClient uses a Transport. It does not retry errors that no retry
// can fix, and leaves anything else to [retryablehttp.DefaultRetryPolicy].
// The errors it stops at are a rejected API key ([ErrUnauthorized]), a
// missing API key or base URL, a refused insecure URL ([ErrInsecureURL]),
// an invalid setting, a token that failed verification ([ErrTokenInvalid]),
// and a login that got a redirect, which logins never follow, or
// a client error other than 408 and 429. The manager would return the same
// error until its login backoff ends.
func CheckRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if err != nil && (errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrInsecureURL) ||
		errors.Is(err, ErrNoAPIKey) || errors.Is(err, ErrNoBaseURL) || errors.Is(err, ErrTokenInvalid) ||
		errors.As(err, new(*configError)) || isPermanentLoginError(err)) {
		return false, err
	}
	return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
}

// isPermanentLoginError reports whether err carries an APIError whose status
// a retry cannot change: a redirect, or a client error other than 408
// Request Timeout and 429 Too Many Requests.
func isPermanentLoginError(err error) bool {
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	status := apiErr.StatusCode
	return (status >= 300 && status < 500) && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
}
