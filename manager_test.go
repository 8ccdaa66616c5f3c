package norman

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fake API keys. The login server accepts the first two.
const (
	aliceKey    = "nk-test-7c1e0b55d2a94f3b"
	bobKey      = "nk-test-2b9d4e61a0c8f735"
	strangerKey = "nk-test-0000deadbeef0000"
)

// clockStart is where fake clocks begin: a whole second, so that a Date
// header names the same instant.
var clockStart = time.Date(2031, time.May, 6, 7, 0, 0, 0, time.UTC)

// stepClock is a clock that moves only when a test moves it.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func newStepClock() *stepClock { return &stepClock{now: clockStart} }

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// unsignedJWT returns an unsigned JWT whose payload is claims.
func unsignedJWT(claims map[string]any) string {
	enc := base64.RawURLEncoding
	payload, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	return enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." +
		enc.EncodeToString(payload) + "." + enc.EncodeToString([]byte("not-a-signature"))
}

// apiHit is one request that reached an API endpoint of loginServer.
type apiHit struct {
	auth []string // Authorization values as the server read them
	body string
}

// loginServer speaks the login protocol and serves API endpoints that
// check the bearer token. It is an http.Handler, so a test can serve it
// on loopback (startLoginServer) or in memory (memLoginServer).
type loginServer struct {
	URL string // base URL, ending in /v0

	logins   atomic.Int64
	arrivals chan int      // login numbers, sent as logins arrive
	closing  chan struct{} // closed when the test ends, so that held logins return

	mu          sync.Mutex
	now         func() time.Time                                    // server clock for Date headers and token claims
	lifetime    time.Duration                                       // exp minus iat of new tokens
	keys        map[string]string                                   // API key to account id
	loginKeys   []string                                            // api_key of each login, in order
	issued      []string                                            // every access and ID token handed out
	valid       map[string]bool                                     // access tokens the API accepts
	rejectAll   bool                                                // the API returns 401 for every token
	hold        func(ctx context.Context, n int)                    // runs before each login response and may block
	reply       func(w http.ResponseWriter, n int, key string) bool // writes the response to login n itself when it returns true
	accessToken func(n int, serverNow time.Time) string             // replaces the issued access token
	apiHold     func(r *http.Request)                               // runs before each API response and may block
	hits        []apiHit
}

func newLoginServer() *loginServer {
	return &loginServer{
		arrivals: make(chan int, 64),
		closing:  make(chan struct{}),
		now:      time.Now,
		lifetime: time.Hour,
		keys:     map[string]string{aliceKey: "acct-1", bobKey: "acct-2"},
		valid:    make(map[string]bool),
	}
}

// startLoginServer serves a new loginServer on a loopback port.
func startLoginServer(t *testing.T) (*loginServer, *httptest.Server) {
	t.Helper()
	s := newLoginServer()
	srv := httptest.NewServer(s)
	s.URL = srv.URL + "/v0"
	t.Cleanup(func() {
		close(s.closing)
		srv.Close()
	})
	return s, srv
}

// memLoginServer serves requests for base in memory. The returned
// transport serves both logins and API requests and never dials.
func memLoginServer(t *testing.T, base string) (*loginServer, *inMemoryTransport) {
	t.Helper()
	s := newLoginServer()
	s.URL = base
	t.Cleanup(func() { close(s.closing) })
	return s, &inMemoryTransport{handler: s}
}

func (s *loginServer) configure(f func(s *loginServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// holdLogins makes every login wait until release is closed.
func (s *loginServer) holdLogins(release <-chan struct{}) {
	s.configure(func(s *loginServer) {
		s.hold = func(ctx context.Context, _ int) {
			select {
			case <-release:
			case <-ctx.Done():
			case <-s.closing:
			}
		}
	})
}

// rejectIssued makes the API reject every access token issued so far.
func (s *loginServer) rejectIssued() {
	s.configure(func(s *loginServer) { clear(s.valid) })
}

func (s *loginServer) issuedTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.issued)
}

func (s *loginServer) apiHits() []apiHit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.hits)
}

func (s *loginServer) lastLoginKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.loginKeys) == 0 {
		return ""
	}
	return s.loginKeys[len(s.loginKeys)-1]
}

// awaitLogin waits until login number n has reached the server.
func (s *loginServer) awaitLogin(t *testing.T, n int) {
	t.Helper()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case got := <-s.arrivals:
			if got >= n {
				return
			}
		case <-timeout.C:
			t.Fatalf("login %d never reached the server; got %d logins", n, s.logins.Load())
		}
	}
}

func (s *loginServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v0/authenticate/login/key":
		s.serveLogin(w, r)
	default:
		s.serveAPI(w, r)
	}
}

func (s *loginServer) serveLogin(w http.ResponseWriter, r *http.Request) {
	n := int(s.logins.Add(1))
	select {
	case s.arrivals <- n:
	default:
	}

	var body struct {
		APIKey string `json:"api_key"`
	}
	data, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(data, &body)

	s.mu.Lock()
	s.loginKeys = append(s.loginKeys, body.APIKey)
	hold, reply, now := s.hold, s.reply, s.now
	s.mu.Unlock()

	if hold != nil {
		hold(r.Context(), n)
	}
	serverNow := now()
	w.Header().Set("Date", serverNow.UTC().Format(http.TimeFormat))
	w.Header().Set("Content-Type", "application/json")
	if reply != nil && reply(w, n, body.APIKey) {
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	account, ok := s.keys[body.APIKey]
	if !ok {
		// Echo the key back, as a careless server might, so that tests
		// can check that the client keeps it out of errors and logs.
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"status_code": http.StatusUnauthorized,
			"error_type":  "Unauthorized",
			"message":     "unknown API key " + body.APIKey,
		})
		return
	}

	access := unsignedJWT(map[string]any{
		"sub": account,
		"iat": serverNow.Unix(),
		"exp": serverNow.Add(s.lifetime).Unix(),
		"jti": fmt.Sprintf("access-%d", n),
	})
	if s.accessToken != nil {
		access = s.accessToken(n, serverNow)
	}
	id := unsignedJWT(map[string]any{
		"sub": account,
		"exp": serverNow.Add(s.lifetime).Unix(),
		"jti": fmt.Sprintf("id-%d", n),
	})
	s.issued = append(s.issued, access, id)
	s.valid[access] = true
	_ = json.NewEncoder(w).Encode(map[string]any{
		"account":      map[string]any{"id": account, "creation_time": "2031-01-01T00:00:00Z", "name": "test"},
		"access_token": access,
		"id_token":     id,
	})
}

func (s *loginServer) serveAPI(w http.ResponseWriter, r *http.Request) {
	data, _ := io.ReadAll(r.Body)
	auth := r.Header.Values("Authorization")

	s.mu.Lock()
	s.hits = append(s.hits, apiHit{auth: auth, body: string(data)})
	ok := !s.rejectAll && len(auth) == 1 && strings.HasPrefix(auth[0], "Bearer ") &&
		s.valid[strings.TrimPrefix(auth[0], "Bearer ")]
	apiHold, now := s.apiHold, s.now
	s.mu.Unlock()

	if apiHold != nil {
		apiHold(r)
	}
	w.Header().Set("Date", now().UTC().Format(http.TimeFormat))
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"error_type":"Unauthorized","message":"invalid access token"}`)
		return
	}
	_, _ = io.WriteString(w, `{"ok":true}`)
}

// inMemoryTransport serves requests with an http.Handler in memory, so
// that hosts which must never be dialled can appear in tests.
type inMemoryTransport struct {
	handler http.Handler
	calls   atomic.Int64
}

func (h *inMemoryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h.calls.Add(1)
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	in := req.Clone(req.Context())
	in.Body = io.NopCloser(bytes.NewReader(body))
	in.RequestURI = req.URL.RequestURI()
	in.RemoteAddr = "127.0.0.1:1"
	rec := httptest.NewRecorder()
	h.handler.ServeHTTP(rec, in)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}

// forbiddenTransport fails the test if anything is sent through it.
type forbiddenTransport struct {
	t     *testing.T
	calls atomic.Int64
}

func (rt *forbiddenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt.calls.Add(1)
	rt.t.Errorf("a request to %s reached a transport that must not be used", req.URL.Host)
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, errors.New("forbiddenTransport: nothing may be sent")
}

// lockedBuffer is a bytes.Buffer that log handlers may share across
// goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newQuietManager returns a manager for base with aliceKey, no log
// output and no login retries; opts override those.
func newQuietManager(base string, opts ...Option) *Manager {
	all := []Option{
		WithBaseURL(base),
		WithAPIKey(aliceKey),
		WithLogger(discardLogger()),
		withLoginRetry(0, time.Millisecond, time.Millisecond),
	}
	return NewManager(append(all, opts...)...)
}

// loopbackManager returns a manager that logs in to s on loopback with
// the fake clock.
func loopbackManager(s *loginServer, srv *httptest.Server, clock *stepClock, opts ...Option) *Manager {
	all := []Option{WithHTTPClient(srv.Client())}
	if clock != nil {
		all = append(all, WithClock(clock.Now))
	}
	return newQuietManager(s.URL, append(all, opts...)...)
}

func mustGetToken(t *testing.T, m *Manager) Sensitive[string] {
	t.Helper()
	tok, err := m.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if tok.IsZero() {
		t.Fatal("Token returned an empty token")
	}
	return tok
}

func checkLogins(t *testing.T, s *loginServer, want int) {
	t.Helper()
	if got := s.logins.Load(); got != int64(want) {
		t.Errorf("got %d logins, want %d", got, want)
	}
}

// pollUntil calls cond every millisecond until it returns true. Tests use
// it only to observe a background login, which no call waits for.
func pollUntil(t *testing.T, event string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", event)
		}
		<-tick.C
	}
}

func TestManagerTokenLifetimeMargins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		lifetime time.Duration
		margin   time.Duration // min(30s, L/10)
		window   time.Duration // min(5m, L/4)
	}{
		{"ten hours caps both", 10 * time.Hour, 30 * time.Second, 5 * time.Minute},
		{"one hour caps both", time.Hour, 30 * time.Second, 5 * time.Minute},
		{"twenty minutes", 20 * time.Minute, 30 * time.Second, 5 * time.Minute},
		{"400 seconds caps the margin only", 400 * time.Second, 30 * time.Second, 100 * time.Second},
		{"two minutes caps neither", 2 * time.Minute, 12 * time.Second, 30 * time.Second},
		{"twenty seconds", 20 * time.Second, 2 * time.Second, 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newStepClock()
			s, srv := startLoginServer(t)
			s.configure(func(s *loginServer) { s.now, s.lifetime = clock.Now, tc.lifetime })
			m := loopbackManager(s, srv, clock)

			if !m.AccessTokenExpired() {
				t.Error("before the first login: AccessTokenExpired() = false, want true")
			}
			first := mustGetToken(t, m)
			checkLogins(t, s, 1)

			staleAt := clockStart.Add(tc.lifetime - tc.window)
			expiredAt := clockStart.Add(tc.lifetime - tc.margin)

			// Expiry is read without logging in.
			for _, c := range []struct {
				at   time.Time
				want bool
			}{
				{clockStart, false},
				{expiredAt.Add(-time.Nanosecond), false},
				{expiredAt, true},
				{expiredAt.Add(time.Hour), true},
			} {
				clock.Set(c.at)
				if got := m.AccessTokenExpired(); got != c.want {
					t.Errorf("at login+%v: AccessTokenExpired() = %v, want %v", c.at.Sub(clockStart), got, c.want)
				}
			}
			checkLogins(t, s, 1)

			clock.Set(staleAt.Add(-time.Nanosecond))
			if got := mustGetToken(t, m); !got.Equal(first) {
				t.Error("just before the stale window: Token returned a new token, want the cached one")
			}
			checkLogins(t, s, 1)

			// In the stale window, Token returns at once with the cached
			// token while one login runs in the background.
			clock.Set(staleAt)
			release := make(chan struct{})
			s.holdLogins(release)
			for i := range 5 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				got, err := m.Token(ctx)
				cancel()
				if err != nil {
					t.Fatalf("stale window, call %d: Token: %v; want the cached token without waiting for the login", i, err)
				}
				if !got.Equal(first) {
					t.Errorf("stale window, call %d: Token returned a token other than the cached one", i)
				}
			}
			s.awaitLogin(t, 2)
			close(release)
			pollUntil(t, "the background login to store a new token", func() bool {
				tok, err := m.AccessToken()
				return err == nil && !tok.Equal(first)
			})
			checkLogins(t, s, 2)
			second := mustGetToken(t, m)
			if second.Equal(first) {
				t.Error("after the background login: Token returned the old token")
			}
			checkLogins(t, s, 2)

			// The refreshed token was received at staleAt; once it expires,
			// Token logs in before returning.
			clock.Set(staleAt.Add(tc.lifetime - tc.margin))
			if !m.AccessTokenExpired() {
				t.Error("after the refreshed token's expiry: AccessTokenExpired() = false, want true")
			}
			third := mustGetToken(t, m)
			checkLogins(t, s, 3)
			if third.Equal(second) {
				t.Error("after expiry: Token returned the expired token")
			}
		})
	}
}

func TestManagerUnknownExpiryFallback(t *testing.T) {
	t.Parallel()
	enc := base64.RawURLEncoding
	tests := []struct {
		name  string
		token func(n int) string
	}{
		{"opaque token", func(n int) string { return fmt.Sprintf("opaque-token-%d", n) }},
		{"JWT without exp", func(n int) string { return unsignedJWT(map[string]any{"sub": "acct-1", "jti": n}) }},
		{"JWT with null exp", func(n int) string { return unsignedJWT(map[string]any{"exp": nil, "jti": n}) }},
		{"JWT with text exp", func(n int) string { return unsignedJWT(map[string]any{"exp": "soon", "jti": n}) }},
		{"payload not JSON", func(n int) string {
			return enc.EncodeToString([]byte(`{"alg":"HS256"}`)) + "." + enc.EncodeToString(fmt.Appendf(nil, "plain text %d", n)) + ".c2ln"
		}},
	}
	const (
		fallback = time.Minute
		margin   = 6 * time.Second  // fallback/10
		window   = 15 * time.Second // fallback/4
	)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newStepClock()
			s, srv := startLoginServer(t)
			s.configure(func(s *loginServer) {
				s.now = clock.Now
				s.accessToken = func(n int, _ time.Time) string { return tc.token(n) }
			})
			m := loopbackManager(s, srv, clock)

			first := mustGetToken(t, m)
			clock.Set(clockStart.Add(fallback - window - time.Nanosecond))
			if got := mustGetToken(t, m); !got.Equal(first) {
				t.Error("within the fallback lifetime: Token returned a new token")
			}
			checkLogins(t, s, 1)

			clock.Set(clockStart.Add(fallback - margin - time.Nanosecond))
			if m.AccessTokenExpired() {
				t.Errorf("at login+%v: AccessTokenExpired() = true, want false", fallback-margin-time.Nanosecond)
			}
			clock.Set(clockStart.Add(fallback - margin))
			if !m.AccessTokenExpired() {
				t.Errorf("at login+%v: AccessTokenExpired() = false, want true", fallback-margin)
			}
			if got := mustGetToken(t, m); got.Equal(first) {
				t.Error("after the fallback lifetime: Token returned the old token")
			}
			checkLogins(t, s, 2)
		})
	}
}

func TestManagerTokenExpiredOnArrival(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		exp  func(serverNow time.Time) any
	}{
		{"exp ten seconds ago", func(now time.Time) any { return now.Add(-10 * time.Second).Unix() }},
		{"exp a day ago", func(now time.Time) any { return now.Add(-24 * time.Hour).Unix() }},
		{"exp equal to the server time", func(now time.Time) any { return now.Unix() }},
		{"exp zero", func(time.Time) any { return 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newStepClock()
			s, srv := startLoginServer(t)
			var tokens []string
			s.configure(func(s *loginServer) {
				s.now = clock.Now
				s.accessToken = func(n int, serverNow time.Time) string {
					tok := unsignedJWT(map[string]any{"exp": tc.exp(serverNow), "jti": n})
					tokens = append(tokens, tok)
					return tok
				}
			})
			m := loopbackManager(s, srv, clock)

			_, err := m.Token(context.Background())
			if err == nil {
				t.Fatal("Token succeeded with a token that expired on arrival, want an error")
			}
			s.mu.Lock()
			for _, tok := range tokens {
				if strings.Contains(err.Error(), tok) {
					t.Error("the error text contains the access token")
				}
			}
			s.mu.Unlock()
			checkLogins(t, s, 1)

			// Within the backoff, calls return the remembered error.
			for range 5 {
				if _, err := m.Token(context.Background()); err == nil {
					t.Fatal("a repeated Token call succeeded, want the remembered error")
				}
			}
			checkLogins(t, s, 1)
			if _, err := m.AccessToken(); !errors.Is(err, ErrNotLoggedIn) {
				t.Errorf("AccessToken: got error %v, want ErrNotLoggedIn", err)
			}

			// After the first pause, one more login; the next pause is longer.
			clock.Advance(failureBackoffMin)
			_, _ = m.Token(context.Background())
			checkLogins(t, s, 2)
			clock.Advance(failureBackoffMin)
			_, _ = m.Token(context.Background())
			checkLogins(t, s, 2)
		})
	}
}

func TestManagerClockSkew(t *testing.T) {
	t.Parallel()
	const lifetime = time.Hour
	tests := []struct {
		name string
		skew time.Duration // server clock minus local clock
	}{
		{"server three hours ahead", 3 * time.Hour},
		{"server three hours behind", -3 * time.Hour},
		{"server a day ahead", 24 * time.Hour},
		{"clocks agree", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newStepClock()
			s, srv := startLoginServer(t)
			s.configure(func(s *loginServer) {
				s.lifetime = lifetime
				s.now = func() time.Time { return clock.Now().Add(tc.skew) }
			})
			m := loopbackManager(s, srv, clock)

			first := mustGetToken(t, m)
			for range 20 {
				mustGetToken(t, m)
			}
			checkLogins(t, s, 1)

			// The Date header places the server's clock within one second,
			// so allow that much before the stale window.
			clock.Set(clockStart.Add(lifetime - maxStaleWindow - 2*time.Second))
			if m.AccessTokenExpired() {
				t.Error("before the stale window: AccessTokenExpired() = true, want false")
			}
			if got := mustGetToken(t, m); !got.Equal(first) {
				t.Error("before the stale window: Token returned a new token")
			}
			checkLogins(t, s, 1)

			clock.Set(clockStart.Add(lifetime))
			if !m.AccessTokenExpired() {
				t.Error("after the token's lifetime: AccessTokenExpired() = false, want true (a dead token is kept)")
			}
			if got := mustGetToken(t, m); got.Equal(first) {
				t.Error("after the token's lifetime: Token returned the dead token")
			}
			for range 20 {
				mustGetToken(t, m)
			}
			checkLogins(t, s, 2)
		})
	}
}

func TestManagerColdStartOneLogin(t *testing.T) {
	t.Parallel()
	const callers = 200
	s, srv := startLoginServer(t)
	release := make(chan struct{})
	s.holdLogins(release)
	m := loopbackManager(s, srv, nil)
	client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}

	var started, done sync.WaitGroup
	started.Add(callers)
	done.Add(callers)
	tokens := make([]Sensitive[string], callers)
	errs := make([]error, callers)
	for i := range callers {
		go func() {
			defer done.Done()
			started.Done()
			if i%2 == 0 {
				tokens[i], errs[i] = m.Token(context.Background())
				return
			}
			resp, err := client.Post(s.URL+"/echo", "application/json", strings.NewReader(`{"n":1}`))
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != http.StatusOK {
				errs[i] = fmt.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	started.Wait()
	s.awaitLogin(t, 1)
	close(release)
	done.Wait()

	checkLogins(t, s, 1)
	want, err := m.AccessToken()
	if err != nil {
		t.Fatalf("AccessToken after the login: %v", err)
	}
	for i := range callers {
		if errs[i] != nil {
			t.Errorf("caller %d: got error %v, want none", i, errs[i])
		}
		if i%2 == 0 && !tokens[i].Equal(want) {
			t.Errorf("caller %d: Token returned a token other than the one login's", i)
		}
	}
	hits := s.apiHits()
	if len(hits) != callers/2 {
		t.Errorf("got %d API requests, want %d", len(hits), callers/2)
	}
	for i, h := range hits {
		if !slices.Equal(h.auth, []string{"Bearer " + want.Value()}) {
			t.Errorf("API request %d did not carry exactly the bearer token of the one login", i)
		}
	}
}

func TestManagerCanceledCallerReturns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		call func(ctx context.Context, m *Manager, s *loginServer, client *http.Client) error
	}{
		{"Token", func(ctx context.Context, m *Manager, _ *loginServer, _ *http.Client) error {
			_, err := m.Token(ctx)
			return err
		}},
		{"InvalidateAccessToken", func(ctx context.Context, m *Manager, _ *loginServer, _ *http.Client) error {
			return m.InvalidateAccessToken(ctx)
		}},
		{"Transport", func(ctx context.Context, _ *Manager, s *loginServer, client *http.Client) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/echo", nil)
			if err != nil {
				return err
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, srv := startLoginServer(t)
			release := make(chan struct{})
			s.holdLogins(release)
			m := loopbackManager(s, srv, nil)
			client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			first := make(chan error, 1)
			go func() { first <- tc.call(ctx, m, s, client) }()
			s.awaitLogin(t, 1)

			cancel()
			select {
			case err := <-first:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("canceled caller: got error %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("canceled caller still waiting for the login")
			}

			others := make(chan error, 2)
			for range 2 {
				go func() { others <- tc.call(context.Background(), m, s, client) }()
			}
			close(release)
			for range 2 {
				if err := <-others; err != nil {
					t.Errorf("caller with a live context: got error %v, want none", err)
				}
			}
			checkLogins(t, s, 1)
			if _, err := m.AccessToken(); err != nil {
				t.Errorf("AccessToken after the shared login: %v", err)
			}
		})
	}
}

func TestManagerRejectedAPIKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
	}{
		{"401", http.StatusUnauthorized},
		{"403", http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newStepClock()
			s, srv := startLoginServer(t)
			s.configure(func(s *loginServer) {
				s.now = clock.Now
				s.reply = func(w http.ResponseWriter, _ int, key string) bool {
					if key != strangerKey {
						return false
					}
					w.WriteHeader(tc.status)
					_, _ = fmt.Fprintf(w, `{"error_type":"Unauthorized","message":"key %s is not valid"}`, strangerKey)
					return true
				}
			})
			m := loopbackManager(s, srv, clock, WithAPIKey(strangerKey))

			_, err := m.Token(context.Background())
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Token: got error %v, want one matching ErrUnauthorized", err)
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Errorf("Token: got error of type %T, want one wrapping *APIError", err)
			} else if apiErr.StatusCode != tc.status {
				t.Errorf("APIError.StatusCode = %d, want %d", apiErr.StatusCode, tc.status)
			}
			if msg := err.Error(); !strings.Contains(msg, "rejected") {
				t.Errorf("error text %q does not say the key was rejected", msg)
			}
			if text := fmt.Sprintf("%v %+v %#v", err, apiErr, apiErr); strings.Contains(text, strangerKey) {
				t.Error("the error contains the API key")
			}
			if retry, _ := CheckRetry(context.Background(), nil, err); retry {
				t.Error("CheckRetry would retry a rejected key, want no retry")
			}
			checkLogins(t, s, 1)

			for range 5 {
				if _, err := m.Token(context.Background()); !errors.Is(err, ErrUnauthorized) {
					t.Errorf("repeated Token: got error %v, want ErrUnauthorized", err)
				}
			}
			req, _ := http.NewRequest(http.MethodGet, s.URL+"/echo", nil)
			if _, err := NewTransport(m, srv.Client().Transport).RoundTrip(req); !errors.Is(err, ErrUnauthorized) {
				t.Errorf("RoundTrip: got error %v, want ErrUnauthorized", err)
			}
			checkLogins(t, s, 1)

			m.SetAPIKey(strangerKey)
			if _, err := m.Token(context.Background()); !errors.Is(err, ErrUnauthorized) {
				t.Errorf("after setting the same key: got error %v, want ErrUnauthorized", err)
			}
			checkLogins(t, s, 1)

			m.SetAPIKey(aliceKey)
			mustGetToken(t, m)
			checkLogins(t, s, 2)
		})
	}
}

func TestManagerLoginRetriesTransientErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		status      int
		failures    int
		checkLogins int
		wantErr     bool
	}{
		{"503 twice", http.StatusServiceUnavailable, 2, 3, false},
		{"429 twice", http.StatusTooManyRequests, 2, 3, false},
		{"500 once", http.StatusInternalServerError, 1, 2, false},
		{"502 three times", http.StatusBadGateway, 3, 4, false},
		{"503 more often than retries", http.StatusServiceUnavailable, 10, 4, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, srv := startLoginServer(t)
			s.configure(func(s *loginServer) {
				s.reply = func(w http.ResponseWriter, n int, _ string) bool {
					if n > tc.failures {
						return false
					}
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(tc.status)
					_, _ = io.WriteString(w, `{"message":"try again"}`)
					return true
				}
			})
			m := loopbackManager(s, srv, nil, withLoginRetry(3, time.Millisecond, 5*time.Millisecond))

			_, err := m.Token(context.Background())
			if gotErr := err != nil; gotErr != tc.wantErr {
				t.Errorf("Token: got error %v, want error: %v", err, tc.wantErr)
			}
			var apiErr *APIError
			switch {
			case !tc.wantErr:
			case !errors.As(err, &apiErr):
				t.Errorf("Token: got error %v, want an *APIError", err)
			case apiErr.StatusCode != tc.status:
				t.Errorf("APIError.StatusCode = %d, want %d", apiErr.StatusCode, tc.status)
			}
			checkLogins(t, s, tc.checkLogins)
		})
	}
}

func TestManagerLoginIgnoresLongRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		retryAfter func() string
	}{
		{"seconds", func() string { return "3600" }},
		{"HTTP date", func() string { return time.Now().Add(2 * time.Hour).UTC().Format(http.TimeFormat) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, srv := startLoginServer(t)
			s.configure(func(s *loginServer) {
				s.reply = func(w http.ResponseWriter, n int, _ string) bool {
					if n > 1 {
						return false
					}
					w.Header().Set("Retry-After", tc.retryAfter())
					w.WriteHeader(http.StatusServiceUnavailable)
					return true
				}
			})
			m := loopbackManager(s, srv, nil, withLoginRetry(3, time.Millisecond, 5*time.Millisecond))

			// The deadline only keeps a failing test from hanging; a
			// correct manager returns long before it.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := m.Token(ctx)
			if err == nil {
				t.Fatal("Token succeeded, want the login error without waiting for Retry-After")
			}
			if ctx.Err() != nil {
				t.Fatalf("Token waited for Retry-After until the caller's deadline: %v", err)
			}
			checkLogins(t, s, 1)
		})
	}
}

func TestManagerRetryAfterPastCallerDeadline(t *testing.T) {
	t.Parallel()
	s, srv := startLoginServer(t)
	s.configure(func(s *loginServer) {
		s.reply = func(w http.ResponseWriter, n int, _ string) bool {
			if n > 1 {
				return false
			}
			// Within the login's own timeout, so the login waits for it.
			w.Header().Set("Retry-After", "20")
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
	})
	m := loopbackManager(s, srv, nil, withLoginRetry(3, time.Millisecond, 5*time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := m.Token(ctx)
	if err == nil {
		t.Fatal("Token succeeded, want an error saying when the login retries")
	}
	if ctx.Err() != nil {
		t.Fatalf("Token waited until the caller's deadline: %v", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got error %v, want one matching context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "pauses until") {
		t.Errorf("got error %q, want it to say until when the login pauses", err)
	}
	checkLogins(t, s, 1)

	// Changing the key ends the paused login, so no goroutine outlives the test.
	m.SetAPIKey("nk-test-other")
}

func TestManagerLoginIgnoresRedirect(t *testing.T) {
	t.Parallel()
	tests := []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect}
	for _, status := range tests {
		t.Run(http.StatusText(status), func(t *testing.T) {
			t.Parallel()
			var elsewhere atomic.Int64
			other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				elsewhere.Add(1)
				_, _ = io.Copy(io.Discard, r.Body)
			}))
			t.Cleanup(other.Close)
			s, srv := startLoginServer(t)
			s.configure(func(s *loginServer) {
				s.reply = func(w http.ResponseWriter, _ int, _ string) bool {
					w.Header().Set("Location", other.URL+"/v0/authenticate/login/key")
					w.WriteHeader(status)
					return true
				}
			})
			m := loopbackManager(s, srv, nil)

			if _, err := m.Token(context.Background()); err == nil {
				t.Error("Token succeeded after a redirected login, want an error")
			}
			checkLogins(t, s, 1)
			if got := elsewhere.Load(); got != 0 {
				t.Errorf("the redirect target got %d requests, want 0 (the API key must stay with the base URL)", got)
			}
		})
	}
}

func TestManagerSetAPIKey(t *testing.T) {
	t.Parallel()
	s, srv := startLoginServer(t)
	m := loopbackManager(s, srv, nil)

	if _, err := m.AccessToken(); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("before login: AccessToken error = %v, want ErrNotLoggedIn", err)
	}
	if _, err := m.IDToken(); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("before login: IDToken error = %v, want ErrNotLoggedIn", err)
	}
	if got := m.AccountID(); got != "" {
		t.Errorf("before login: AccountID() = %q, want empty", got)
	}

	access := mustGetToken(t, m)
	got, err := m.AccessToken()
	if err != nil {
		t.Errorf("after login: AccessToken error = %v, want none", err)
	}
	if !got.Equal(access) {
		t.Error("after login: AccessToken differs from the token Token returned")
	}
	id, err := m.IDToken()
	if err != nil {
		t.Errorf("after login: IDToken error = %v, want none", err)
	}
	if id.IsZero() {
		t.Error("after login: IDToken is empty, want the ID token")
	}
	if id.Equal(access) {
		t.Error("after login: IDToken equals the access token, want the ID token")
	}
	if got := m.AccountID(); got != "acct-1" {
		t.Errorf("after login: AccountID() = %q, want %q", got, "acct-1")
	}

	for _, key := range []string{aliceKey, "  " + aliceKey + "\n"} {
		m.SetAPIKey(key)
		got, err := m.AccessToken()
		if err != nil {
			t.Errorf("after setting the same key: AccessToken error = %v, want none", err)
		}
		if !got.Equal(access) {
			t.Error("after setting the same key: AccessToken differs from the cached token")
		}
		if got := m.AccountID(); got != "acct-1" {
			t.Errorf("after setting the same key: AccountID() = %q, want %q", got, "acct-1")
		}
	}
	mustGetToken(t, m)
	checkLogins(t, s, 1)

	m.SetAPIKey(bobKey)
	if _, err := m.AccessToken(); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("after a new key: AccessToken error = %v, want ErrNotLoggedIn", err)
	}
	if _, err := m.IDToken(); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("after a new key: IDToken error = %v, want ErrNotLoggedIn", err)
	}
	if got := m.AccountID(); got != "" {
		t.Errorf("after a new key: AccountID() = %q, want empty", got)
	}
	if !m.AccessTokenExpired() {
		t.Error("after a new key: AccessTokenExpired() = false, want true")
	}

	if got := mustGetToken(t, m); got.Equal(access) {
		t.Error("after a new key: Token returned the old key's token")
	}
	checkLogins(t, s, 2)
	if s.lastLoginKey() != bobKey {
		t.Error("the login after SetAPIKey did not send the new key")
	}
	if got := m.AccountID(); got != "acct-2" {
		t.Errorf("after logging in with the new key: AccountID() = %q, want %q", got, "acct-2")
	}
}

func TestManagerSetAPIKeyDuringLogin(t *testing.T) {
	t.Parallel()
	s, srv := startLoginServer(t)
	release := make(chan struct{})
	s.holdLogins(release)
	m := loopbackManager(s, srv, nil)

	type result struct {
		tok Sensitive[string]
		err error
	}
	done := make(chan result, 1)
	go func() {
		tok, err := m.Token(context.Background())
		done <- result{tok, err}
	}()
	s.awaitLogin(t, 1)
	m.SetAPIKey(bobKey)
	close(release)

	got := receive(t, done, "Token to return")
	if got.err != nil {
		t.Fatalf("Token: %v", got.err)
	}
	// The login with the old key finished after the key changed, so its
	// token is dropped. A second login with the new key follows.
	checkLogins(t, s, 2)
	if key := s.lastLoginKey(); key != bobKey {
		t.Error("the last login did not send the new key")
	}
	if id := m.AccountID(); id != "acct-2" {
		t.Errorf("AccountID() = %q, want %q (the new key's account)", id, "acct-2")
	}
	current, err := m.AccessToken()
	if err != nil {
		t.Errorf("AccessToken error = %v, want none", err)
	}
	if !current.Equal(got.tok) {
		t.Error("AccessToken differs from the token Token returned")
	}
}

func TestManagerInvalidateAccessToken(t *testing.T) {
	t.Parallel()
	clock := newStepClock()
	s, srv := startLoginServer(t)
	s.configure(func(s *loginServer) { s.now, s.lifetime = clock.Now, time.Hour })
	m := loopbackManager(s, srv, clock)
	ctx := context.Background()

	if err := m.InvalidateAccessToken(ctx); err != nil {
		t.Fatalf("with no token: InvalidateAccessToken: %v", err)
	}
	checkLogins(t, s, 1)
	first, err := m.AccessToken()
	if err != nil {
		t.Fatalf("AccessToken after InvalidateAccessToken: %v", err)
	}

	clock.Advance(10 * time.Minute)
	if err := m.InvalidateAccessToken(ctx); err != nil {
		t.Fatalf("with a fresh token: InvalidateAccessToken: %v", err)
	}
	checkLogins(t, s, 1)

	clock.Set(clockStart.Add(time.Hour - maxExpiryMargin))
	if err := m.InvalidateAccessToken(ctx); err != nil {
		t.Fatalf("with an expired token: InvalidateAccessToken: %v", err)
	}
	checkLogins(t, s, 2)
	got, err := m.AccessToken()
	if err != nil {
		t.Errorf("after InvalidateAccessToken with an expired token: AccessToken error = %v, want none", err)
	}
	if got.Equal(first) {
		t.Error("after InvalidateAccessToken with an expired token: AccessToken returned the expired token")
	}
}

func TestManagerLogsNoSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		handler func(w io.Writer) slog.Handler
	}{
		{"JSON", func(w io.Writer) slog.Handler {
			return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug, AddSource: true})
		}},
		{"text", func(w io.Writer) slog.Handler {
			return slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var out lockedBuffer
			logger := slog.New(tc.handler(&out))
			clock := newStepClock()
			s, srv := startLoginServer(t)
			s.configure(func(s *loginServer) { s.now, s.lifetime = clock.Now, time.Hour })
			m := loopbackManager(s, srv, clock, WithLogger(logger), withLoginRetry(1, time.Millisecond, time.Millisecond))
			client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}
			post := func() (*http.Response, error) {
				resp, err := client.Post(s.URL+"/echo", "application/json", strings.NewReader(`{}`))
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				return resp, err
			}

			// Login.
			first := mustGetToken(t, m)
			logger.Info("token", "token", first, "manager", m)

			// The API rejects the token: one login and a retry.
			s.rejectIssued()
			resp, err := post()
			if err != nil {
				t.Fatalf("request after the token was revoked: %v", err)
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("request after the token was revoked: got status %d, want 200", resp.StatusCode)
			}

			// Background refresh, whose first attempt fails with 503.
			second, _ := m.AccessToken()
			s.configure(func(s *loginServer) {
				s.reply = func(w http.ResponseWriter, n int, _ string) bool {
					if n != 3 {
						return false
					}
					w.WriteHeader(http.StatusServiceUnavailable)
					return true
				}
			})
			clock.Set(clockStart.Add(time.Hour - maxStaleWindow))
			mustGetToken(t, m)
			pollUntil(t, "the background refresh", func() bool {
				tok, err := m.AccessToken()
				return err == nil && !tok.Equal(second)
			})

			// A rejected key, echoed back by the server.
			m.SetAPIKey(strangerKey)
			_, err = m.Token(context.Background())
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Token with an unknown key: got error %v, want ErrUnauthorized", err)
			}
			logger.Error("token failed", "error", err, "manager", m)
			if _, err := post(); err == nil {
				t.Fatal("request with an unknown key succeeded")
			} else {
				logger.Error("request failed", "error", err)
			}

			logs := out.String()
			for _, want := range []string{"logged in", "rejected the access token", "retrying", "login failed"} {
				if !strings.Contains(logs, want) {
					t.Errorf("the log has no record mentioning %q", want)
				}
			}
			for _, key := range []string{aliceKey, strangerKey} {
				if strings.Contains(logs, key) {
					t.Error("the log contains an API key")
				}
			}
			issued := s.issuedTokens()
			if len(issued) < 6 {
				t.Errorf("the server issued %d tokens, want at least 6 (three logins)", len(issued))
			}
			for _, tok := range issued {
				if strings.Contains(logs, tok) {
					t.Error("the log contains an access or ID token")
				}
			}
		})
	}
}

func TestTokenStateLeadRefresh(t *testing.T) {
	t.Parallel()
	received := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name      string
		lifetime  time.Duration
		loginTook time.Duration
		wantStale time.Duration // after receipt
	}{
		{"fast login keeps the window", 2 * time.Second, 200 * time.Millisecond, 1500 * time.Millisecond},
		{"slow login widens the window", 1060 * time.Millisecond, 200 * time.Millisecond, 660 * time.Millisecond},
		{"very slow login stops at half the lifetime", 4 * time.Second, 10 * time.Second, 2 * time.Second},
		{"hour-long token keeps five minutes", time.Hour, time.Second, 55 * time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, err := newTokenState("nk-test-opaque-access-token", "", "", received, "")
			if err != nil {
				t.Fatal(err)
			}
			// Give the state the lifetime under test, with the usual window.
			st.lifetime = tc.lifetime
			st.staleAt = received.Add(tc.lifetime - min(maxStaleWindow, tc.lifetime/4))
			st.expiredAt = received.Add(tc.lifetime - min(maxExpiryMargin, tc.lifetime/10))

			st.leadRefresh(tc.loginTook)
			if got := st.staleAt.Sub(received); got != tc.wantStale {
				t.Errorf("stale after %v, want %v", got, tc.wantStale)
			}
			if !st.staleAt.Before(st.expiredAt) {
				t.Errorf("stale at %v is not before expiry at %v", st.staleAt, st.expiredAt)
			}
		})
	}
}
