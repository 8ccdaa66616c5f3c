package retryable_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	norman "github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/examples/retryable"
	"github.com/norman-ml/norman-go/normantest"
)

// fakeClock is a clock that moves only when a test advances it. The server
// and the manager share one, so that both agree on when a token expires.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// quiet discards the manager's log records, which the tests do not check.
var quiet = slog.New(slog.DiscardHandler)

// attempt is what the server saw of one request.
type attempt struct {
	auth string
	body []byte
}

// TestRetryGetsNewTokenAndSameBody sends a request that the API responds to
// with 503 and then 200, while the token expires during the backoff between the two
// attempts. The second attempt must carry a token from a new login, and the
// same body as the first.
func TestRetryGetsNewTokenAndSameBody(t *testing.T) {
	const lifetime = time.Minute
	clock := newFakeClock()

	srv := normantest.NewServer()
	defer srv.Close()
	srv.SetClock(clock.Now)
	srv.SetTokenLifetime(lifetime)
	srv.AddAccount("alice", "nk-test-alice")

	var (
		mu       sync.Mutex
		attempts []attempt
	)
	srv.Handle("POST echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("reading the request body: %v", err)
		}
		mu.Lock()
		attempts = append(attempts, attempt{auth: r.Header.Get("Authorization"), body: body})
		n := len(attempts)
		mu.Unlock()

		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(body)
	}))

	mgr := norman.NewManager(
		norman.WithBaseURL(srv.URL),
		norman.WithAPIKey("nk-test-alice"),
		norman.WithClock(clock.Now),
		norman.WithLogger(quiet),
	)
	client := retryable.NewClient(mgr)
	client.Logger = nil
	// The backoff takes no real time, but twice the token's lifetime on the
	// clock that the server and the manager read.
	client.Backoff = func(_, _ time.Duration, _ int, _ *http.Response) time.Duration {
		clock.Advance(2 * lifetime)
		return 0
	}

	sent := []byte(`{"question":"same bytes on every attempt?"}`)
	req, err := retryablehttp.NewRequest(http.MethodPost, srv.URL+"/echo", sent)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, sent) {
		t.Errorf("response = %d %q, want 200 with the request body echoed", resp.StatusCode, got)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(attempts) != 2 {
		t.Fatalf("the handler saw %d attempts, want 2", len(attempts))
	}
	first, second := attempts[0], attempts[1]
	// The tokens are compared, never printed.
	if first.auth == "" || second.auth == "" {
		t.Errorf("an attempt carried no Authorization header (first set: %t, second set: %t)", first.auth != "", second.auth != "")
	}
	if first.auth == second.auth {
		t.Error("the second attempt carried the first attempt's token, want a token from a new login")
	}
	for i, a := range attempts {
		if !bytes.Equal(a.body, sent) {
			t.Errorf("attempt %d sent body %q, want %q", i+1, a.body, sent)
		}
	}
	if got := srv.Logins(); got != 2 {
		t.Errorf("logins = %d, want 2: one before each attempt", got)
	}
	// Three requests would mean that the expired token was sent, rejected
	// with 401 and replaced by the transport's own retry, not before the
	// attempt as it should be.
	if got := srv.Requests(); got != 2 {
		t.Errorf("authenticated requests = %d, want 2", got)
	}
}

// TestRejectedKeyIsNotRetried checks that norman.CheckRetry stops at a
// rejected API key, where retryablehttp's default policy would try again.
func TestRejectedKeyIsNotRetried(t *testing.T) {
	tests := []struct {
		name       string
		checkRetry retryablehttp.CheckRetry
		retried    bool
	}{
		{"norman.CheckRetry", norman.CheckRetry, false},
		{"DefaultRetryPolicy", retryablehttp.DefaultRetryPolicy, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock() // does not move, so the manager's pause after the failure never ends
			srv := normantest.NewServer()
			defer srv.Close()
			srv.SetClock(clock.Now)
			srv.AddAccount("alice", "nk-test-alice")

			mgr := norman.NewManager(
				norman.WithBaseURL(srv.URL),
				norman.WithAPIKey("nk-test-wrong"),
				norman.WithClock(clock.Now),
				norman.WithLogger(quiet),
			)
			client := retryable.NewClient(mgr)
			client.Logger = nil
			client.CheckRetry = tt.checkRetry
			client.RetryWaitMin, client.RetryWaitMax = time.Millisecond, time.Millisecond
			attempts := 0
			client.RequestLogHook = func(retryablehttp.Logger, *http.Request, int) { attempts++ }

			req, err := retryablehttp.NewRequest(http.MethodPost, srv.URL+"/authenticate/accounts/get", []byte("{}"))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("Do succeeded with status %d, want an error", resp.StatusCode)
			}
			if !errors.Is(err, norman.ErrUnauthorized) {
				t.Errorf("Do error = %v, want one that matches norman.ErrUnauthorized", err)
			}
			wantAttempts := 1
			if tt.retried {
				wantAttempts += client.RetryMax
			}
			if attempts != wantAttempts {
				t.Errorf("attempts = %d, want %d", attempts, wantAttempts)
			}
			// Either way the manager remembers the failure, so only one
			// login reaches the server and no request goes to the API.
			if got := srv.Logins(); got != 1 {
				t.Errorf("logins = %d, want 1", got)
			}
			if got := srv.Requests(); got != 0 {
				t.Errorf("authenticated requests = %d, want 0", got)
			}
		})
	}
}
