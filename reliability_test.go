package norman

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/norman-ml/norman-go/normantest"
)

// recordLog is a slog.Handler that keeps every record, so that a test can
// wait for one that a background login writes.
type recordLog struct {
	mu      sync.Mutex
	records []slog.Record
	changed chan struct{} // holds a value after a record arrives
}

func newRecordLog() *recordLog { return &recordLog{changed: make(chan struct{}, 1)} }

func (h *recordLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
	return nil
}

func (h *recordLog) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordLog) WithGroup(string) slog.Handler      { return h }

// matching returns the records whose message is msg.
func (h *recordLog) matching(msg string) []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []slog.Record
	for _, r := range h.records {
		if r.Message == msg {
			out = append(out, r)
		}
	}
	return out
}

// await waits until n records with message msg have arrived and returns
// the nth.
func (h *recordLog) await(t *testing.T, msg string, n int) slog.Record {
	t.Helper()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		if got := h.matching(msg); len(got) >= n {
			return got[n-1]
		}
		select {
		case <-h.changed:
		case <-timeout.C:
			t.Fatalf("timed out waiting for log record %d %q; got %d", n, msg, len(h.matching(msg)))
		}
	}
}

// recordAttr returns the text of the attribute key of r, or "".
func recordAttr(r slog.Record, key string) string {
	var value string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			value = a.Value.String()
			return false
		}
		return true
	})
	return value
}

const (
	revokedKey = "nk-test-revoked-41c9e2d07b"
	stormKey   = "nk-test-storm-8a3f61c2e9"
	refreshKey = "nk-test-refresh-5d07c3b1a4"
)

func TestReliabilityRevokedKeyUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: 5 s of requests")
	}
	t.Parallel()
	const (
		duration  = 5 * time.Second
		tick      = 10 * time.Millisecond
		perTick   = 10 // 1,000 requests per second
		maxLogins = 10
	)
	srv := normantest.NewServer()
	t.Cleanup(srv.Close)
	srv.AddAccount("revoked", revokedKey)
	srv.RevokeAPIKey(revokedKey)

	// The default login retry policy: a 401 is never retried.
	m := NewManager(WithBaseURL(srv.URL), WithAPIKey(revokedKey),
		WithHTTPClient(srv.Client()), WithLogger(discardLogger()))
	client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}

	var unauthorized, other atomic.Int64
	var firstOther sync.Once
	var otherText string
	send := func() {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/authenticate/accounts/get", strings.NewReader(`{}`))
		if err != nil {
			panic(err)
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("got a response with status %d", resp.StatusCode)
		}
		if errors.Is(err, ErrUnauthorized) {
			unauthorized.Add(1)
			return
		}
		other.Add(1)
		firstOther.Do(func() { otherText = strings.ReplaceAll(err.Error(), revokedKey, "<API key>") })
	}

	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	start := time.Now()
	var wg sync.WaitGroup
	sent := 0
	for range duration / tick {
		<-ticker.C
		if time.Since(start) > duration+time.Second {
			break // a slow machine sends fewer requests, never for longer
		}
		for range perTick {
			wg.Go(send)
			sent++
		}
	}
	wg.Wait()
	elapsed := time.Since(start)

	if got := unauthorized.Load(); got != int64(sent) {
		t.Errorf("got %d of %d requests failing with ErrUnauthorized, want all; %d failed otherwise, the first with: %s",
			got, sent, other.Load(), otherText)
	}
	if got := srv.Logins(); got < 1 || got > maxLogins {
		t.Errorf("got %d logins for %d requests in %s, want 1 to %d", got, sent, elapsed.Round(time.Millisecond), maxLogins)
	}
	if got := srv.Requests(); got != 0 {
		t.Errorf("got %d requests at the API, want 0: no request may leave without a token", got)
	}
	t.Logf("%d requests in %s, %d logins", sent, elapsed.Round(time.Millisecond), srv.Logins())
}

// faultServer serves logins that succeed until broken is set, and from
// then on passes them to fault. Its API endpoint, any other path, accepts
// the access tokens it issued.
type faultServer struct {
	URL   string
	clock *stepClock
	fault func(s *faultServer, w http.ResponseWriter, r *http.Request)

	broken   atomic.Bool
	logins   atomic.Int64
	bodyRead chan struct{} // receives when the client starts reading a response marked resetMarker
	closing  chan struct{} // closed when the test ends, so that held handlers return

	mu     sync.Mutex
	issued map[string]bool
}

// resetMarker is a response header that makes resetSignal report the
// first read of the body.
const resetMarker = "X-Test-Reset-After-Read"

func startFaultServer(t *testing.T, clock *stepClock, fault func(s *faultServer, w http.ResponseWriter, r *http.Request)) (*faultServer, *httptest.Server) {
	t.Helper()
	s := &faultServer{
		clock:    clock,
		fault:    fault,
		bodyRead: make(chan struct{}, 1),
		closing:  make(chan struct{}),
		issued:   make(map[string]bool),
	}
	srv := httptest.NewServer(s)
	s.URL = srv.URL + "/v0"
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(s.closing) }) // runs first, so that srv.Close does not wait for held handlers
	return s, srv
}

// loginBody returns a successful login response for account, with an
// access token valid for an hour from now on s's clock.
func (s *faultServer) loginBody(account string) (body []byte, access string) {
	now := s.clock.Now()
	access = unsignedJWT(map[string]any{
		"sub": account,
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"jti": fmt.Sprintf("fault-%d", s.logins.Load()),
	})
	body, err := json.Marshal(map[string]any{
		"account":      map[string]any{"id": account, "creation_time": "2031-01-01T00:00:00Z", "name": account},
		"access_token": access,
		"id_token":     unsignedJWT(map[string]any{"sub": account}),
	})
	if err != nil {
		panic(err)
	}
	return body, access
}

func (s *faultServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Date", s.clock.Now().UTC().Format(http.TimeFormat))
	if r.URL.Path != "/v0/"+loginPath {
		s.mu.Lock()
		ok := s.issued[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		s.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true}`)
		return
	}

	s.logins.Add(1)
	if s.broken.Load() {
		s.fault(s, w, r)
		return
	}
	body, access := s.loginBody("acct-1")
	s.mu.Lock()
	s.issued[access] = true
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// hijackHalf writes the headers and the first half of a successful login
// response straight to the connection, with a Content-Length for all of it,
// and returns the connection for the caller to end.
func (s *faultServer) hijackHalf(w http.ResponseWriter, extraHeader string) net.Conn {
	body, _ := s.loginBody("acct-evil")
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nDate: %s\r\n%s\r\n",
		len(body), s.clock.Now().UTC().Format(http.TimeFormat), extraHeader)
	_, _ = buf.Write(body[:len(body)/2])
	_ = buf.Flush()
	return conn
}

// waitClosing blocks until the client goes away or the test ends.
func (s *faultServer) waitClosing(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-s.closing:
	}
}

// resetSignal sends on read when the client first reads a response body
// marked with resetMarker, so that a server can reset the connection while the
// client is reading the body.
type resetSignal struct {
	base http.RoundTripper
	read chan<- struct{}
}

func (rt *resetSignal) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	if err == nil && resp.Header.Get(resetMarker) != "" {
		resp.Body = &signalReader{ReadCloser: resp.Body, read: rt.read}
	}
	return resp, err
}

type signalReader struct {
	io.ReadCloser
	read chan<- struct{}
	once sync.Once
}

func (b *signalReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.once.Do(func() { b.read <- struct{}{} })
	return n, err
}

func TestReliabilityBrokenLogin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		fault   func(s *faultServer, w http.ResponseWriter, r *http.Request)
		timeout time.Duration // of the login client; 0 means none
		want    string        // pattern of the login error
	}{
		{
			name: "truncated body",
			fault: func(s *faultServer, w http.ResponseWriter, r *http.Request) {
				s.hijackHalf(w, "").Close()
			},
			want: `^norman: login: reading response from http://127\.0\.0\.1:\d+/v0/authenticate/login/key: unexpected EOF$`,
		},
		{
			name: "HTML with 200",
			fault: func(s *faultServer, w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				_, _ = io.WriteString(w, "<html><body><h1>Welcome to nginx!</h1></body></html>")
			},
			want: `^norman: login: invalid response \(Content-Type "text/html; charset=utf-8"\): want a JSON object with access_token: invalid character '<'`,
		},
		{
			name: "null access_token",
			fault: func(s *faultServer, w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"account":{"id":"acct-evil"},"access_token":null,"id_token":null}`)
			},
			want: `^norman: login: response has no access_token`,
		},
		{
			name: "connection reset mid-body",
			fault: func(s *faultServer, w http.ResponseWriter, r *http.Request) {
				conn := s.hijackHalf(w, resetMarker+": 1\r\n")
				select {
				case <-s.bodyRead:
				case <-s.closing:
				}
				if tcp, ok := conn.(*net.TCPConn); ok {
					_ = tcp.SetLinger(0) // close with a reset, not a FIN
				}
				conn.Close()
			},
			want: `^norman: login: reading response from http://127\.0\.0\.1:\d+/v0/authenticate/login/key: (read tcp .*: connection reset by peer|unexpected EOF)$`,
		},
		{
			name: "body over 1 MiB",
			fault: func(s *faultServer, w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"access_token":"`+strings.Repeat("a", int(maxResponseBody))+`"}`)
			},
			want: `^norman: login: reading response from http://127\.0\.0\.1:\d+/v0/authenticate/login/key: response body exceeds 1048576 bytes$`,
		},
		{
			name: "no answer",
			fault: func(s *faultServer, w http.ResponseWriter, r *http.Request) {
				s.waitClosing(r)
			},
			timeout: 200 * time.Millisecond,
			want:    `^norman: login: Post "http://127\.0\.0\.1:\d+/v0/authenticate/login/key": (context deadline exceeded|net/http: request canceled)( \(Client\.Timeout exceeded while awaiting headers\))?$`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := regexp.MustCompile(tc.want)
			clock := newStepClock()
			s, srv := startFaultServer(t, clock, tc.fault)
			httpClient := &http.Client{
				Transport: &resetSignal{base: srv.Client().Transport, read: s.bodyRead},
				Timeout:   tc.timeout,
			}
			log := newRecordLog()
			warm := newQuietManager(s.URL, WithHTTPClient(httpClient), WithClock(clock.Now), WithLogger(slog.New(log)))
			client := &http.Client{Transport: NewTransport(warm, srv.Client().Transport)}
			old := mustGetToken(t, warm)
			oldExpiry := warm.Expiry()
			s.broken.Store(true)

			// Without a token, the caller gets the login's error and the
			// manager stays logged out.
			cold := newQuietManager(s.URL, WithHTTPClient(httpClient), WithClock(clock.Now))
			_, err := cold.Token(context.Background())
			switch {
			case err == nil:
				t.Fatal("Token on a new manager: got no error")
			case !want.MatchString(err.Error()):
				t.Errorf("Token on a new manager: got error %q, want one matching %q", err, tc.want)
			}
			if strings.Contains(err.Error(), aliceKey) {
				t.Error("the login error contains the API key")
			}
			if _, err := cold.AccessToken(); !errors.Is(err, ErrNotLoggedIn) {
				t.Errorf("AccessToken after the failed login: got error %v, want ErrNotLoggedIn", err)
			}
			if id := cold.AccountID(); id != "" {
				t.Errorf("AccountID after the failed login = %q, want \"\"", id)
			}

			// With a valid token, the failed background login changes
			// nothing.
			clock.Set(clockStart.Add(time.Hour - 5*time.Minute)) // the start of the stale window
			if tok := mustGetToken(t, warm); !tok.Equal(old) {
				t.Fatal("Token in the stale window returned a new token, want the cached one")
			}
			rec := log.await(t, "norman: login failed", 1)
			if got := recordAttr(rec, "error"); !want.MatchString(got) {
				t.Errorf("logged login error = %q, want one matching %q", got, tc.want)
			}
			if tok := mustGetToken(t, warm); !tok.Equal(old) {
				t.Error("Token after the failed login returned a token other than the cached one")
			}
			if got, _ := warm.AccessToken(); !got.Equal(old) {
				t.Error("AccessToken after the failed login is not the cached token")
			}
			if id := warm.AccountID(); id != "acct-1" {
				t.Errorf("AccountID after the failed login = %q, want %q", id, "acct-1")
			}
			if got := warm.Expiry(); !got.Equal(oldExpiry) {
				t.Errorf("Expiry after the failed login = %v, want %v", got, oldExpiry)
			}
			if warm.AccessTokenExpired() {
				t.Error("AccessTokenExpired after the failed login = true, want false")
			}
			resp, err := client.Get(s.URL + "/echo")
			if err != nil {
				t.Fatalf("request after the failed login: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("request after the failed login: got status %d, want 200", resp.StatusCode)
			}
			if got := s.logins.Load(); got != 3 {
				t.Errorf("got %d logins, want 3: one good, one for each manager", got)
			}
		})
	}
}

// TestReliabilityLoginTimeout shortens the package's login timeout, so it
// must not run in parallel with other tests.
func TestReliabilityLoginTimeout(t *testing.T) {
	saved := loginTimeout
	loginTimeout = 200 * time.Millisecond
	t.Cleanup(func() { loginTimeout = saved })

	s, srv := startLoginServer(t)
	s.holdLogins(make(chan struct{})) // never answers
	m := loopbackManager(s, srv, nil)

	const callers = 3
	errs := make(chan error, callers)
	for range callers {
		go func() {
			_, err := m.Token(context.Background())
			errs <- err
		}()
	}
	for i := range callers {
		err := receive(t, errs, "a caller of the hung login")
		switch {
		case err == nil:
			t.Errorf("caller %d: got no error, want a login timeout", i)
		case !strings.HasPrefix(err.Error(), "norman: login"):
			t.Errorf("caller %d: got error %q, want a login error", i, err)
		case !strings.Contains(err.Error(), "timed out") && !errors.Is(err, context.DeadlineExceeded):
			t.Errorf("caller %d: got error %q, want one that says the login timed out", i, err)
		}
	}
	checkLogins(t, s, 1)
	if _, err := m.AccessToken(); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("AccessToken after the timeout: got error %v, want ErrNotLoggedIn", err)
	}
}

// loginInFlight reports whether m has a login in progress.
func loginInFlight(m *Manager) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.flight != nil
}

func TestReliabilityRefreshFailureKeepsToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		lifetime time.Duration
	}{
		{"pause", time.Hour},                // the 30 s pause ends before the token expires
		{"until expiry", 100 * time.Second}, // the token expires within the pause
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := newStepClock()
			srv := normantest.NewServer()
			t.Cleanup(srv.Close)
			srv.SetClock(clock.Now)
			srv.SetTokenLifetime(tc.lifetime)
			srv.AddAccount("refresh", refreshKey)
			var seen sync.Map // bearer values that reached the endpoint
			srv.Handle("POST whoami", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Store(r.Header.Get("Authorization"), true)
				_, _ = io.WriteString(w, `{}`)
			}))

			log := newRecordLog()
			m := NewManager(WithBaseURL(srv.URL), WithAPIKey(refreshKey), WithHTTPClient(srv.Client()),
				WithLogger(slog.New(log)), WithClock(clock.Now), withLoginRetry(3, time.Millisecond, 2*time.Millisecond))
			client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}
			call := func(when string, wantBearer string) {
				t.Helper()
				seen.Clear()
				resp, err := client.Post(srv.URL+"/whoami", "application/json", strings.NewReader(`{}`))
				if err != nil {
					t.Fatalf("%s: request: %v", when, err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("%s: got status %d, want 200", when, resp.StatusCode)
				}
				if _, ok := seen.Load(wantBearer); !ok {
					t.Errorf("%s: the request did not carry the expected token", when)
				}
			}

			old := mustGetToken(t, m)
			oldBearer := "Bearer " + old.Value()
			// The documented windows: stale for min(5m, L/4), expired
			// min(30s, L/10) before exp, and a failed refresh paused for
			// 30 s or until expiry.
			window := min(5*time.Minute, tc.lifetime/4)
			margin := min(30*time.Second, tc.lifetime/10)
			staleAt := clockStart.Add(tc.lifetime - window)
			expiredAt := clockStart.Add(tc.lifetime - margin)
			retryAt := staleAt.Add(30 * time.Second)
			if expiredAt.Before(retryAt) {
				retryAt = expiredAt
			}

			srv.FailLogins(4, http.StatusServiceUnavailable) // the attempt and its 3 retries
			clock.Set(staleAt)
			call("stale window", oldBearer)
			rec := log.await(t, "norman: login failed", 1)
			if rec.Level != slog.LevelWarn {
				t.Errorf("failed refresh logged at %v, want WARN", rec.Level)
			}
			if got, want := recordAttr(rec, "retry_in"), retryAt.Sub(staleAt).String(); got != want {
				t.Errorf("failed refresh logged retry_in=%s, want %s", got, want)
			}
			if got := srv.Logins(); got != 5 {
				t.Errorf("after the failed refresh: got %d logins, want 5", got)
			}

			clock.Set(retryAt.Add(-time.Second))
			call("just before the retry", oldBearer)
			if tok := mustGetToken(t, m); !tok.Equal(old) {
				t.Error("Token before the retry returned a new token, want the cached one")
			}
			if loginInFlight(m) {
				t.Error("a login started before the retry was due")
			}
			if got, _ := m.AccessToken(); !got.Equal(old) {
				t.Error("the cached token was replaced before the retry was due")
			}
			if got := srv.Logins(); got != 5 {
				t.Errorf("before the retry is due: got %d logins, want 5", got)
			}
			if got := len(log.matching("norman: login failed")); got != 1 {
				t.Errorf("got %d failed logins logged, want 1", got)
			}

			clock.Set(retryAt)
			if retryAt.Before(expiredAt) {
				// Still valid: the cached token is served while one more
				// background login runs.
				if tok := mustGetToken(t, m); !tok.Equal(old) {
					t.Error("Token when the retry is due returned a new token, want the cached one")
				}
				log.await(t, "norman: logged in", 2)
			}
			tok := mustGetToken(t, m)
			if tok.Equal(old) {
				t.Error("Token after the retry returned the old token, want a new one")
			}
			call("after the retry", "Bearer "+tok.Value())
			if got := srv.Logins(); got != 6 {
				t.Errorf("after the retry: got %d logins, want 6", got)
			}
		})
	}
}

func TestReliabilityStaleWindowNoWait(t *testing.T) {
	t.Parallel()
	const requests = 64
	clock := newStepClock()
	s, srv := startLoginServer(t)
	s.configure(func(s *loginServer) { s.now = clock.Now })
	m := loopbackManager(s, srv, clock)
	client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}
	old := mustGetToken(t, m)

	release := make(chan struct{})
	s.holdLogins(release)
	clock.Set(clockStart.Add(time.Hour - 5*time.Minute)) // the start of the stale window

	start := make(chan struct{})
	statuses := make(chan int, requests)
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() {
			<-start
			resp, err := client.Post(s.URL+"/echo", "application/json", strings.NewReader(`{}`))
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	allDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(allDone)
	}()
	close(start)

	// The background login is held at the server until release is
	// closed, so the requests can only finish without it.
	s.awaitLogin(t, 2)
	receive(t, allDone, "the requests in the stale window, while the login is held")
	for range requests {
		if got := <-statuses; got != http.StatusOK {
			t.Errorf("request in the stale window: got status %d, want 200", got)
		}
	}
	for i, h := range s.apiHits() {
		if !slices.Equal(h.auth, []string{"Bearer " + old.Value()}) {
			t.Errorf("request %d in the stale window did not carry the cached token", i)
		}
	}
	checkLogins(t, s, 2)

	close(release)
	pollUntil(t, "the background login to store a new token", func() bool {
		tok, _ := m.AccessToken()
		return !tok.Equal(old)
	})
	if tok := mustGetToken(t, m); tok.Equal(old) {
		t.Error("Token after the background login returned the old token")
	}
	checkLogins(t, s, 2)
}

// gatedTransport holds every request until open is closed.
type gatedTransport struct {
	base http.RoundTripper
	open <-chan struct{}
}

func (rt *gatedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case <-rt.open:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	return rt.base.RoundTrip(req)
}

func TestReliabilityTokenStorm(t *testing.T) {
	t.Parallel()
	const callers = 10000
	srv := normantest.NewServer()
	t.Cleanup(srv.Close)
	srv.AddAccount("storm", stormKey)

	// The login cannot reach the server before every caller has started.
	allStarted := make(chan struct{})
	m := NewManager(WithBaseURL(srv.URL), WithAPIKey(stormKey), WithLogger(discardLogger()),
		WithHTTPClient(&http.Client{Transport: &gatedTransport{base: srv.Client().Transport, open: allStarted}}))

	tokens := make([]Sensitive[string], callers)
	errs := make([]error, callers)
	var started, done sync.WaitGroup
	started.Add(callers)
	for i := range callers {
		done.Go(func() {
			started.Done()
			tokens[i], errs[i] = m.Token(context.Background())
		})
	}
	started.Wait()
	close(allStarted)
	done.Wait()

	if got := srv.Logins(); got != 1 {
		t.Errorf("got %d logins for %d callers, want 1", got, callers)
	}
	want, err := m.AccessToken()
	if err != nil {
		t.Fatalf("AccessToken after the storm: %v", err)
	}
	failed, different := 0, 0
	var firstErr error
	for i := range callers {
		switch {
		case errs[i] != nil:
			failed++
			if firstErr == nil {
				firstErr = errs[i]
			}
		case !tokens[i].Equal(want):
			different++
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d callers got an error, the first: %v", failed, callers, firstErr)
	}
	if different > 0 {
		t.Errorf("%d of %d callers got a token other than the login's", different, callers)
	}
}

// holdFirst holds the first request that carries bearer until release is
// closed, and sends on arrived when that request arrives.
type holdFirst struct {
	base    http.RoundTripper
	bearer  string
	arrived chan<- struct{}
	release <-chan struct{}
	once    sync.Once
}

func (rt *holdFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("Authorization") == rt.bearer {
		first := false
		rt.once.Do(func() { first = true })
		if first {
			rt.arrived <- struct{}{}
			<-rt.release
		}
	}
	return rt.base.RoundTrip(req)
}

// TestReliabilityRevokedAfterRefresh revokes every token just after a
// background refresh: a request that left with the previous token gets a
// 401, and the token it is retried with was revoked too. A fresh login
// would save the request.
func TestReliabilityRevokedAfterRefresh(t *testing.T) {
	t.Parallel()
	clock := newStepClock()
	s, srv := startLoginServer(t)
	s.configure(func(s *loginServer) { s.now = clock.Now })
	m := loopbackManager(s, srv, clock)
	old := mustGetToken(t, m)

	arrived := make(chan struct{}, 1)
	release := make(chan struct{})
	base := &holdFirst{base: srv.Client().Transport, bearer: "Bearer " + old.Value(), arrived: arrived, release: release}
	client := &http.Client{Transport: NewTransport(m, base)}

	statuses := make(chan int, 1)
	go func() {
		resp, err := client.Post(s.URL+"/echo", "application/json", strings.NewReader(`{}`))
		if err != nil {
			statuses <- 0
			return
		}
		resp.Body.Close()
		statuses <- resp.StatusCode
	}()
	receive(t, arrived, "the request with the first token")

	clock.Set(clockStart.Add(time.Hour - 5*time.Minute)) // the start of the stale window
	mustGetToken(t, m)                                   // starts the background refresh
	pollUntil(t, "the background login to store a new token", func() bool {
		tok, _ := m.AccessToken()
		return !tok.Equal(old)
	})
	s.rejectIssued()
	close(release)

	if got := receive(t, statuses, "the response"); got != http.StatusOK {
		t.Errorf("request sent before the revocation: got status %d, want 200 after one fresh login", got)
	}
	checkLogins(t, s, 3)
}
