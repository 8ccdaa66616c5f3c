package slog_test

import (
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	norman "github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/normantest"
)

func Example() {
	srv := normantest.NewServer()
	defer srv.Close()
	srv.AddAccount("alice", "nk-test-alice")

	logger := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{
		Level:       slog.LevelDebug,
		ReplaceAttr: stableAttrs(srv.URL),
	}))

	// The server and the manager read a clock that does not move, so the
	// times in the records are the same on every run.
	clock := func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	srv.SetClock(clock)
	mgr := norman.NewManager(
		norman.WithBaseURL(srv.URL),
		norman.WithAPIKey("nk-test-alice"),
		norman.WithLogger(logger),
		norman.WithClock(clock),
	)
	client := &http.Client{Transport: norman.NewTransport(mgr, nil)}
	get := func() {
		resp, err := client.Post(srv.URL+"/authenticate/accounts/get", "application/json", nil)
		if err == nil {
			resp.Body.Close()
		}
	}

	// The first login attempt fails with 503, and the manager retries it.
	srv.FailLogins(1, http.StatusServiceUnavailable)
	get()

	// The API rejects the token, and the transport logs in again.
	srv.RevokeTokens()
	get()

	// The server rejects the new key.
	mgr.SetAPIKey("nk-test-unknown")
	get()

	// Output:
	// {"level":"WARN","msg":"norman: login attempt failed; retrying","attempt":1,"status":503}
	// {"level":"DEBUG","msg":"norman: logged in","reason":"no token","account_id":"ACCOUNT_ID","expires_in":"1h0m0s","expires_at":"2026-01-02T04:04:05Z"}
	// {"level":"WARN","msg":"norman: API rejected the access token; logging in again","method":"POST","url":"BASE_URL/authenticate/accounts/get","account_id":"ACCOUNT_ID"}
	// {"level":"DEBUG","msg":"norman: logged in","reason":"token rejected","account_id":"ACCOUNT_ID","expires_in":"1h0m0s","expires_at":"2026-01-02T04:04:05Z"}
	// {"level":"DEBUG","msg":"norman: API key changed; cached tokens dropped"}
	// {"level":"WARN","msg":"norman: login failed","reason":"no token","error":"norman: API key rejected by BASE_URL/authenticate/login/key (401 Unauthorized: Authentication failed: The API key is not valid.): check the API key given with WithAPIKey, SetAPIKey or NORMAN_API_KEY","retry_in":"1s"}
}

// stableAttrs returns a ReplaceAttr function that makes the records of the
// example the same on every run. It drops the time and replaces account IDs
// and the server's base URL, whose port changes, with placeholders. It also
// writes durations as text, such as "1h0m0s", instead of nanoseconds.
func stableAttrs(baseURL string) func([]string, slog.Attr) slog.Attr {
	return func(_ []string, a slog.Attr) slog.Attr {
		switch {
		case a.Key == slog.TimeKey:
			return slog.Attr{}
		case a.Key == "account_id":
			return slog.String(a.Key, "ACCOUNT_ID")
		case a.Value.Kind() == slog.KindDuration:
			return slog.String(a.Key, a.Value.Duration().String())
		case a.Value.Kind() == slog.KindString:
			return slog.String(a.Key, strings.ReplaceAll(a.Value.String(), baseURL, "BASE_URL"))
		}
		if err, ok := a.Value.Any().(error); ok {
			return slog.String(a.Key, strings.ReplaceAll(err.Error(), baseURL, "BASE_URL"))
		}
		return a
	}
}
