package norman

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// loginPath is the login endpoint, relative to the base URL.
const loginPath = "authenticate/login/key"

// doLogin logs in with key and returns the new token state. It does not
// touch the manager's state. If onPause is not nil, it is called with the
// end of each wait between attempts as the wait starts.
func (m *Manager) doLogin(ctx context.Context, key Sensitive[string], onPause func(time.Time)) (*tokenState, error) {
	body, err := json.Marshal(struct {
		APIKey string `json:"api_key"`
	}{key.Value()})
	if err != nil {
		return nil, fmt.Errorf("norman: login: encoding request: %w", err)
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, m.endpoint(loginPath), body)
	if err != nil {
		return nil, fmt.Errorf("norman: login: %w", err)
	}
	setJSONHeaders(req.Header)

	resp, err := m.retryingClient(onPause).Do(req)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		return nil, fmt.Errorf("norman: login: %w", err)
	}
	defer resp.Body.Close()
	receivedAt := m.now()

	data, err := readResponse("login", req.Request, resp, key.Value())
	var apiErr *APIError
	if errors.As(err, &apiErr) && (apiErr.StatusCode == http.StatusUnauthorized || apiErr.StatusCode == http.StatusForbidden) {
		return nil, &rejectedKeyError{apiErr: apiErr}
	}
	if err != nil {
		return nil, err
	}

	access, id, accountID, err := parseLoginResponse(data, resp.Header.Get("Content-Type"))
	if err != nil {
		return nil, err
	}
	date := resp.Header.Get("Date")

	var idClaims *IDTokenClaims
	if m.verifier != nil {
		// exp is judged at the same server-clock instant as in newTokenState,
		// so a skewed local clock is corrected once and no leeway is added.
		idClaims, err = m.verifier.verify(ctx, access, id, serverClock(receivedAt, date))
		if err != nil {
			return nil, err
		}
	}
	st, err := newTokenState(access, id, accountID, receivedAt, date)
	if err != nil {
		return nil, err
	}
	st.idClaims = idClaims
	return st, nil
}

// parseLoginResponse reads the tokens and account id from a 2xx login body.
// Every field may be null or missing except access_token.
func parseLoginResponse(data []byte, contentType string) (access, id, accountID string, err error) {
	var body struct {
		Account *struct {
			ID string `json:"id"`
		} `json:"account"`
		AccessToken *string `json:"access_token"`
		IDToken     *string `json:"id_token"`
	}
	if err := json.Unmarshal(data, &body); err != nil {
		// Decoder errors name types and at most one character, never a value.
		return "", "", "", fmt.Errorf("norman: login: invalid response (Content-Type %q): want a JSON object with access_token: %v", contentType, err)
	}
	if body.AccessToken == nil || *body.AccessToken == "" {
		return "", "", "", errors.New("norman: login: response has no access_token: the server accepted the API key but sent no token")
	}

	access, err = cleanSecret("access token", *body.AccessToken)
	if err != nil {
		return "", "", "", err
	}
	if access == "" {
		return "", "", "", errors.New("norman: login: response has an empty access_token")
	}
	if body.IDToken != nil {
		if id, err = cleanSecret("ID token", *body.IDToken); err != nil {
			return "", "", "", err
		}
	}
	if body.Account != nil {
		accountID = body.Account.ID
	}
	return access, id, accountID, nil
}

// newTokenState computes the lifetime of an access token received at
// receivedAt on the local clock, with the response's Date header giving the
// server's clock.
func newTokenState(access, id, accountID string, receivedAt time.Time, date string) (*tokenState, error) {
	serverNow := serverClock(receivedAt, date)
	st := &tokenState{
		access:     NewSensitive(access),
		id:         NewSensitive(id),
		bearer:     NewSensitive([]string{"Bearer " + access}),
		accountID:  accountID,
		receivedAt: receivedAt,
	}

	// An unreadable payload is not an error: the token is opaque to us and
	// is used for the fallback lifetime.
	times, _ := readTokenTimes(access)
	st.expiresAt = times.expiresAt
	if st.expiresAt.IsZero() {
		st.lifetime = unknownExpiryLifetime
	} else {
		st.lifetime = st.expiresAt.Sub(serverNow)
	}
	if st.lifetime <= 0 {
		return nil, fmt.Errorf("norman: login returned an access token that expired at %s, %s before the server's time %s: check the server's clock and token lifetime",
			st.expiresAt.UTC().Format(time.RFC3339), (-st.lifetime).Round(time.Second), serverNow.UTC().Format(time.RFC3339))
	}

	margin := min(maxExpiryMargin, st.lifetime/10)
	window := min(maxStaleWindow, st.lifetime/4)
	st.expiredAt = receivedAt.Add(st.lifetime - margin)
	st.staleAt = receivedAt.Add(st.lifetime - window)
	return st, nil
}

// serverClock estimates the server's clock at the local instant local. A
// Date header places the server's clock within the second it names. The
// local clock is used when it falls inside that second, and the nearest end
// of the second otherwise. Without a valid Date header the local clock is
// used as it is.
func serverClock(local time.Time, date string) time.Time {
	if date == "" {
		return local
	}
	serverSecond, err := http.ParseTime(date)
	if err != nil {
		return local
	}
	switch wall := local.Round(0); {
	case wall.Before(serverSecond):
		return serverSecond
	case !wall.Before(serverSecond.Add(time.Second)):
		return serverSecond.Add(time.Second)
	}
	return local
}

// retryingClient returns a retryablehttp client for one login. It is built
// per login so that its hooks can count that login's attempts and report
// its waits to onPause.
func (m *Manager) retryingClient(onPause func(time.Time)) *retryablehttp.Client {
	attempt := 0
	return &retryablehttp.Client{
		HTTPClient:   m.httpClient,
		RetryWaitMin: m.retry.waitMin,
		RetryWaitMax: m.retry.waitMax,
		RetryMax:     m.retry.max,
		Backoff: func(waitMin, waitMax time.Duration, attemptNum int, resp *http.Response) time.Duration {
			wait := retryablehttp.DefaultBackoff(waitMin, waitMax, attemptNum, resp)
			if onPause != nil {
				onPause(time.Now().Add(wait))
			}
			return wait
		},
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			attempt++
			retry, checkErr := retryablehttp.DefaultRetryPolicy(ctx, resp, err)
			if !retry || attempt > m.retry.max {
				return retry, checkErr
			}
			if wait, ok := retryAfter(resp); ok {
				if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
					return false, fmt.Errorf("server asked to retry after %s, beyond the login deadline: try again then", wait)
				}
			}

			attrs := []any{"attempt", attempt}
			if resp != nil {
				attrs = append(attrs, "status", resp.StatusCode)
			} else {
				attrs = append(attrs, "error", err)
			}
			m.log().Warn("norman: login attempt failed; retrying", attrs...)
			return true, nil
		},
	}
}

// retryAfter reads the Retry-After header of a 429 or 503 response, in
// seconds or as an HTTP date, as retryablehttp's backoff does.
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp == nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return 0, false
	}
	value := resp.Header.Get("Retry-After")
	if value == "" {
		return 0, false
	}
	if seconds, err := strconv.ParseInt(value, 10, 64); err == nil && seconds >= 0 {
		return time.Duration(seconds) * time.Second, true
	}
	if at, err := http.ParseTime(value); err == nil {
		return max(time.Until(at), 0), true
	}
	return 0, false
}

// newHTTPClient returns a copy of c, or a default client, that never follows
// redirects, so that the API key in a login body is never sent to another
// URL.
//
// A client without a Transport gets a clone of [http.DefaultTransport],
// because retryablehttp closes the idle connections of the login client
// after a failed login, and those of http.DefaultTransport belong to the
// whole program.
func newHTTPClient(c *http.Client) *http.Client {
	client := &http.Client{}
	if c != nil {
		copied := *c
		client = &copied
	}
	if t, ok := http.DefaultTransport.(*http.Transport); ok && client.Transport == nil {
		client.Transport = t.Clone()
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return client
}

func setJSONHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
}

// readResponse reads the body of a login or signup response. For a non-2xx
// status it returns an *APIError, with secrets scrubbed from its text.
func readResponse(operation string, req *http.Request, resp *http.Response, secrets ...string) ([]byte, error) {
	data, err := readBody(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("norman: %s: reading response from %s: %w", operation, redactURL(req.URL), err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, newAPIError(req, resp, data, secrets...)
	}
	return data, nil
}

// readBody reads at most maxResponseBody bytes of a login or signup
// response.
func readBody(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxResponseBody+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > maxResponseBody {
		return nil, fmt.Errorf("response body exceeds %d bytes", maxResponseBody)
	}
	return bytes.TrimSpace(data), nil
}
