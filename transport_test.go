package norman

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/norman-ml/norman-go/normantest"
)

// memBaseURL is the base URL of in-memory servers. It is never dialled.
const memBaseURL = "https://norman.invalid/v0"

// sentRequest is the header of a request as a base transport received it.
type sentRequest struct {
	header http.Header
}

// headerRecorder keeps a copy of the header map of every request it
// receives and passes the request to next, or returns 200 when next is nil.
type headerRecorder struct {
	next http.RoundTripper
	mu   sync.Mutex
	seen []sentRequest
}

func (rt *headerRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	rt.seen = append(rt.seen, sentRequest{header: req.Header.Clone()})
	rt.mu.Unlock()
	if rt.next != nil {
		return rt.next.RoundTrip(req)
	}
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{
		StatusCode: http.StatusOK,
		Header:     make(http.Header),
		Body:       http.NoBody,
		Request:    req,
	}, nil
}

func (rt *headerRecorder) requests() []sentRequest {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return slices.Clone(rt.seen)
}

// authorizationKeys returns the keys of h that name the Authorization
// header in any letter case.
func authorizationKeys(h http.Header) []string {
	var keys []string
	for key := range h {
		if strings.EqualFold(key, "Authorization") {
			keys = append(keys, key)
		}
	}
	return keys
}

// closeCountingBody is a request body that counts its Close calls.
type closeCountingBody struct {
	r      io.Reader
	closes atomic.Int32
}

func newCloseCountingBody(s string) *closeCountingBody {
	return &closeCountingBody{r: strings.NewReader(s)}
}

func (b *closeCountingBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *closeCountingBody) Close() error {
	b.closes.Add(1)
	return nil
}

// scribblingTransport passes requests to next and then rewrites every
// entry of the request's header map, as a careless base transport might.
// The value slices themselves stay untouched, as the RoundTripper contract
// requires.
type scribblingTransport struct{ next http.RoundTripper }

func (tr scribblingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := tr.next.RoundTrip(req)
	for key := range req.Header {
		req.Header[key] = []string{"changed by the base transport"}
	}
	req.Header.Set("X-Added-By-Base", "1")
	return resp, err
}

// memManager returns a manager whose logins a new loginServer for base
// serves in memory, with that server's transport.
func memManager(t *testing.T, base string, opts ...Option) (*Manager, *loginServer, *inMemoryTransport) {
	t.Helper()
	s, mem := memLoginServer(t, base)
	m := newQuietManager(base, append([]Option{WithHTTPClient(&http.Client{Transport: mem})}, opts...)...)
	return m, s, mem
}

func TestTransportOriginPinning(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		base    string
		allowed []string
		url     string
		want    bool
	}{
		{"same origin", memBaseURL, nil, "https://norman.invalid/v0/echo", true},
		{"same origin, path outside the base", memBaseURL, nil, "https://norman.invalid/status", true},
		{"explicit default port", memBaseURL, nil, "https://norman.invalid:443/v0/echo", true},
		{"host in upper case", memBaseURL, nil, "https://NORMAN.INVALID/v0/echo", true},
		{"base with explicit default port", "https://norman.invalid:443/v0", nil, "https://norman.invalid/v0/echo", true},
		{"other port", memBaseURL, nil, "https://norman.invalid:8443/v0/echo", false},
		{"plain http to the same host", memBaseURL, nil, "http://norman.invalid/v0/echo", false},
		{"plain http to the same host and port", "https://norman.invalid:8443/v0", nil, "http://norman.invalid:8443/v0/echo", false},
		{"subdomain", memBaseURL, nil, "https://api.norman.invalid/v0/echo", false},
		{"base host as a prefix", memBaseURL, nil, "https://norman.invalid.example.invalid/v0/echo", false},
		{"base host as user info", memBaseURL, nil, "https://norman.invalid@example.invalid/v0/echo", false},
		{"allowed origin", memBaseURL, []string{"https://files.norman.invalid"}, "https://files.norman.invalid/upload", true},
		{"allowed origin, explicit default port", memBaseURL, []string{"https://files.norman.invalid"}, "https://files.norman.invalid:443/upload", true},
		{"allowed origin, other port", memBaseURL, []string{"https://files.norman.invalid"}, "https://files.norman.invalid:444/upload", false},
		{"allowed origin, plain http", memBaseURL, []string{"https://files.norman.invalid"}, "http://files.norman.invalid/upload", false},
		{"allowed loopback origin", memBaseURL, []string{"http://127.0.0.1:9"}, "http://127.0.0.1:9/upload", true},
		{"allowed loopback origin, other port", memBaseURL, []string{"http://127.0.0.1:9"}, "http://127.0.0.1:10/upload", false},
		{"allowed loopback origin, https", memBaseURL, []string{"http://127.0.0.1:9"}, "https://127.0.0.1:9/upload", false},
		{"localhost is not 127.0.0.1", memBaseURL, []string{"http://127.0.0.1:9"}, "http://localhost:9/upload", false},
		{"loopback base, same port", "http://127.0.0.1:9/v0", nil, "http://127.0.0.1:9/v0/echo", true},
		{"loopback base, other port", "http://127.0.0.1:9/v0", nil, "http://127.0.0.1:10/v0/echo", false},
		{"IPv6 loopback base", "http://[::1]:9/v0", nil, "http://[::1]:9/v0/echo", true},
		{"IPv6 loopback base, other port", "http://[::1]:9/v0", nil, "http://[::1]:10/v0/echo", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, _, _ := memManager(t, tc.base, WithAllowedOrigins(tc.allowed...))
			tok := mustGetToken(t, m)
			rec := &headerRecorder{}

			req, err := http.NewRequest(http.MethodGet, tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := NewTransport(m, rec).RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			resp.Body.Close()

			seen := rec.requests()
			if len(seen) != 1 {
				t.Fatalf("the base transport got %d requests, want 1", len(seen))
			}
			got := seen[0].header.Values("Authorization")
			switch {
			case tc.want && !slices.Equal(got, []string{"Bearer " + tok.Value()}):
				t.Errorf("request to %s: got %d Authorization values, not the bearer token; want exactly the bearer token", tc.url, len(got))
			case !tc.want && len(authorizationKeys(seen[0].header)) != 0:
				t.Errorf("request to %s carries an Authorization header, want none", tc.url)
			}
		})
	}
}

// startOtherServer starts a loopback server on its own port that records the
// Authorization values of each request.
func startOtherServer(t *testing.T) (*httptest.Server, func() [][]string) {
	t.Helper()
	var mu sync.Mutex
	var seen [][]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen = append(seen, r.Header.Values("Authorization"))
		mu.Unlock()
		_, _ = io.WriteString(w, "other")
	}))
	t.Cleanup(srv.Close)
	return srv, func() [][]string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

func TestTransportRequestToOtherPort(t *testing.T) {
	t.Parallel()
	ns := normantest.NewServer()
	t.Cleanup(ns.Close)
	ns.AddAccount("alice", aliceKey)
	other, seen := startOtherServer(t)
	m := newQuietManager(ns.URL, WithHTTPClient(ns.Client()))
	client := &http.Client{Transport: NewTransport(m, ns.Client().Transport)}

	// The API accepts the token, so the manager does send one.
	resp, err := client.Post(ns.URL+"/authenticate/accounts/get", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("API request: got status %d, want 200", resp.StatusCode)
	}

	tests := []struct {
		name   string
		header []string // the caller's own Authorization values
	}{
		{"no header", nil},
		{"caller's own header", []string{"Basic b3RoZXI6c2VydmljZQ=="}},
	}
	for i, tc := range tests {
		req, err := http.NewRequest(http.MethodGet, other.URL+"/path", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.header != nil {
			req.Header["Authorization"] = tc.header
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: request to the other port: %v", tc.name, err)
		}
		resp.Body.Close()
		got := seen()
		if len(got) != i+1 {
			t.Fatalf("%s: the other server got %d requests, want %d", tc.name, len(got), i+1)
		}
		if !slices.Equal(got[i], tc.header) {
			t.Errorf("%s: the other server got Authorization values unlike the caller's (%d values, want %d); the token must not leave the API origin",
				tc.name, len(got[i]), len(tc.header))
		}
	}
	if got := ns.Logins(); got != 1 {
		t.Errorf("got %d logins, want 1", got)
	}
}

func TestTransportRedirectToOtherPort(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		method string
		status int
	}{
		{"302 GET", http.MethodGet, http.StatusFound},
		{"301 GET", http.MethodGet, http.StatusMovedPermanently},
		{"307 POST", http.MethodPost, http.StatusTemporaryRedirect},
		{"308 POST", http.MethodPost, http.StatusPermanentRedirect},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := normantest.NewServer()
			t.Cleanup(ns.Close)
			ns.AddAccount("alice", aliceKey)
			other, seen := startOtherServer(t)
			// The hop endpoint sits behind the server's token check, so the
			// server redirects the first hop only if it carried a valid token.
			ns.Handle(tc.method+" hop", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, other.URL+"/landing", tc.status)
			}))
			m := newQuietManager(ns.URL, WithHTTPClient(ns.Client()))
			client := &http.Client{Transport: NewTransport(m, ns.Client().Transport)}

			req, err := http.NewRequest(tc.method, ns.URL+"/hop", bytes.NewReader([]byte(`{"a":1}`)))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got status %d, want 200 after the redirect", resp.StatusCode)
			}
			if string(body) != "other" {
				t.Fatalf("got body %q, want the other server's body %q", body, "other")
			}
			if got := ns.Requests(); got != 1 {
				t.Errorf("the API got %d authenticated requests, want 1", got)
			}
			got := seen()
			if len(got) != 1 {
				t.Fatalf("the other server got %d requests, want 1", len(got))
			}
			if len(got[0]) != 0 {
				t.Error("the redirected request carries an Authorization header, want none")
			}
		})
	}
}

func TestTransportReplacesAuthorizationHeader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		header http.Header
	}{
		{"canonical key", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}},
		{"two values", http.Header{"Authorization": {"Bearer old-one", "Bearer old-two"}}},
		{"empty value", http.Header{"Authorization": {""}}},
		{"lower-case key", http.Header{"authorization": {"Bearer stale"}}},
		{"upper-case key", http.Header{"AUTHORIZATION": {"Bearer stale"}}},
		{"canonical and lower-case keys", http.Header{"Authorization": {"Basic x"}, "authorization": {"Bearer stale"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, srv := startLoginServer(t)
			m := loopbackManager(s, srv, nil)
			rec := &headerRecorder{next: srv.Client().Transport}

			req, err := http.NewRequest(http.MethodPost, s.URL+"/echo", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			for key, values := range tc.header {
				req.Header[key] = slices.Clone(values)
			}
			resp, err := NewTransport(m, rec).RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("got status %d, want 200", resp.StatusCode)
			}

			tok, err := m.AccessToken()
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"Bearer " + tok.Value()}
			sent := rec.requests()[0].header
			if keys := authorizationKeys(sent); !slices.Equal(keys, []string{"Authorization"}) {
				t.Errorf("sent header has Authorization keys %q, want only %q", keys, "Authorization")
			}
			if !slices.Equal(sent["Authorization"], want) {
				t.Errorf("sent %d Authorization values, not the bearer token; want exactly the bearer token", len(sent["Authorization"]))
			}
			hits := s.apiHits()
			if len(hits) != 1 {
				t.Fatalf("the API got %d requests, want 1", len(hits))
			}
			if !slices.Equal(hits[0].auth, want) {
				t.Errorf("the server received %d Authorization values, not the bearer token; want exactly the bearer token", len(hits[0].auth))
			}
		})
	}
}

func TestTransportLeavesRequestUnchanged(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		prepare func(s *loginServer) // runs after the first login
	}{
		{"accepted", func(*loginServer) {}},
		{"401 then retry", func(s *loginServer) { s.rejectIssued() }},
		{"401 twice", func(s *loginServer) { s.configure(func(s *loginServer) { s.rejectAll = true }) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, s, mem := memManager(t, memBaseURL)
			mustGetToken(t, m)
			tc.prepare(s)
			tr := NewTransport(m, scribblingTransport{next: mem})

			ctx := context.Background()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, memBaseURL+"/echo?page=2", bytes.NewReader([]byte(`{"a":1}`)))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Basic Y2FsbGVyOnBhc3M=")
			req.Header.Set("Content-Type", "application/json")
			req.Header["X-Trace"] = []string{"one", "two"}

			wantHeader := req.Header.Clone()
			headerMap := reflect.ValueOf(req.Header).UnsafePointer()
			url, urlString := req.URL, req.URL.String()
			body, getBody := req.Body, req.GetBody
			method, host, contentLength := req.Method, req.Host, req.ContentLength

			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			resp.Body.Close()

			if reflect.ValueOf(req.Header).UnsafePointer() != headerMap {
				t.Error("the request's Header is a different map after RoundTrip, want the caller's map")
			}
			if changed := changedKeys(req.Header, wantHeader); len(changed) > 0 {
				t.Errorf("the request's header changed under keys %q, want it unchanged", changed)
			}
			if req.URL != url {
				t.Error("the request's URL is a different value after RoundTrip, want the caller's")
			}
			if req.URL.String() != urlString {
				t.Errorf("the request's URL changed: got %s, want %s", req.URL, urlString)
			}
			if req.Body != body {
				t.Error("the request's Body changed, want the caller's body")
			}
			if (req.GetBody == nil) != (getBody == nil) {
				t.Error("the request's GetBody changed")
			}
			if req.Method != method {
				t.Errorf("the request's Method changed: got %q, want %q", req.Method, method)
			}
			if req.Host != host {
				t.Errorf("the request's Host changed: got %q, want %q", req.Host, host)
			}
			if req.ContentLength != contentLength {
				t.Errorf("the request's ContentLength changed: got %d, want %d", req.ContentLength, contentLength)
			}
		})
	}
}

// changedKeys returns the keys whose values differ between got and want.
func changedKeys(got, want http.Header) []string {
	var changed []string
	for key := range maps.Keys(got) {
		if !slices.Equal(got[key], want[key]) {
			changed = append(changed, key)
		}
	}
	for key := range maps.Keys(want) {
		if _, ok := got[key]; !ok {
			changed = append(changed, key)
		}
	}
	slices.Sort(changed)
	return changed
}

func TestTransportClosesBodyOnError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		setup   func(t *testing.T, base http.RoundTripper) (*Transport, string)
		ctx     func() context.Context
		wantErr error // nil means any error
	}{
		{
			name: "login fails",
			setup: func(t *testing.T, base http.RoundTripper) (*Transport, string) {
				m, s, _ := memManager(t, memBaseURL)
				s.configure(func(s *loginServer) {
					s.reply = func(w http.ResponseWriter, _ int, _ string) bool {
						w.WriteHeader(http.StatusInternalServerError)
						return true
					}
				})
				return NewTransport(m, base), memBaseURL + "/echo"
			},
		},
		{
			name: "API key rejected",
			setup: func(t *testing.T, base http.RoundTripper) (*Transport, string) {
				m, _, _ := memManager(t, memBaseURL, WithAPIKey(strangerKey))
				return NewTransport(m, base), memBaseURL + "/echo"
			},
			wantErr: ErrUnauthorized,
		},
		{
			name: "no API key",
			setup: func(t *testing.T, base http.RoundTripper) (*Transport, string) {
				m, _, _ := memManager(t, memBaseURL, WithAPIKey(""))
				return NewTransport(m, base), memBaseURL + "/echo"
			},
			wantErr: ErrNoAPIKey,
		},
		{
			name: "API key with a control character",
			setup: func(t *testing.T, base http.RoundTripper) (*Transport, string) {
				m, _, _ := memManager(t, memBaseURL, WithAPIKey("nk-test-\x1b[0m"))
				return NewTransport(m, base), memBaseURL + "/echo"
			},
		},
		{
			name: "insecure base URL",
			setup: func(t *testing.T, base http.RoundTripper) (*Transport, string) {
				const insecure = "http://norman.invalid/v0"
				m := newQuietManager(insecure, WithHTTPClient(&http.Client{Transport: &forbiddenTransport{t: t}}))
				return NewTransport(m, base), insecure + "/echo"
			},
			wantErr: ErrInsecureURL,
		},
		{
			name: "context canceled",
			setup: func(t *testing.T, base http.RoundTripper) (*Transport, string) {
				m, _, _ := memManager(t, memBaseURL)
				return NewTransport(m, base), memBaseURL + "/echo"
			},
			ctx: func() context.Context {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				return ctx
			},
			wantErr: context.Canceled,
		},
		{
			name: "no manager",
			setup: func(t *testing.T, base http.RoundTripper) (*Transport, string) {
				return &Transport{Base: base}, memBaseURL + "/echo"
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base := &forbiddenTransport{t: t}
			tr, url := tc.setup(t, base)
			ctx := context.Background()
			if tc.ctx != nil {
				ctx = tc.ctx()
			}
			body := newCloseCountingBody(`{"a":1}`)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, body)
			if err != nil {
				t.Fatal(err)
			}

			resp, err := tr.RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
				t.Errorf("RoundTrip returned a response with status %d, want none", resp.StatusCode)
			}
			switch {
			case err == nil:
				t.Error("RoundTrip returned no error")
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("RoundTrip: got error %v, want one matching %v", err, tc.wantErr)
			}
			if got := body.closes.Load(); got != 1 {
				t.Errorf("the request body was closed %d times, want 1", got)
			}
			if got := base.calls.Load(); got != 0 {
				t.Errorf("the base transport got %d requests, want 0", got)
			}
		})
	}
}

func TestTransportClosesBodyOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		url        string
		prepare    func(s *loginServer)
		replay     bool
		wantStatus int
		wantReplay int // bodies made by GetBody
	}{
		{"accepted", memBaseURL + "/echo", func(*loginServer) {}, true, http.StatusOK, 0},
		// The in-memory server returns 401 to the request without a token.
		{"other origin", "https://other.invalid/echo", func(*loginServer) {}, true, http.StatusUnauthorized, 0},
		{"401 with a replayable body", memBaseURL + "/echo", func(s *loginServer) { s.rejectIssued() }, true, http.StatusOK, 1},
		{"401 with a one-shot body", memBaseURL + "/echo", func(s *loginServer) { s.rejectIssued() }, false, http.StatusUnauthorized, 0},
		{"401 twice", memBaseURL + "/echo", func(s *loginServer) {
			s.configure(func(s *loginServer) { s.rejectAll = true })
		}, true, http.StatusUnauthorized, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m, s, mem := memManager(t, memBaseURL)
			mustGetToken(t, m)
			tc.prepare(s)

			const payload = `{"a":1}`
			body := newCloseCountingBody(payload)
			req, err := http.NewRequest(http.MethodPost, tc.url, body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = int64(len(payload))
			var mu sync.Mutex
			var replays []*closeCountingBody
			if tc.replay {
				req.GetBody = func() (io.ReadCloser, error) {
					mu.Lock()
					defer mu.Unlock()
					b := newCloseCountingBody(payload)
					replays = append(replays, b)
					return b, nil
				}
			}

			resp, err := NewTransport(m, mem).RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Errorf("got status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if got := body.closes.Load(); got != 1 {
				t.Errorf("the request body was closed %d times, want 1", got)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(replays) != tc.wantReplay {
				t.Errorf("GetBody was called %d times, want %d", len(replays), tc.wantReplay)
			}
			for i, b := range replays {
				if got := b.closes.Load(); got != 1 {
					t.Errorf("replayed body %d was closed %d times, want 1", i, got)
				}
			}
		})
	}
}

func TestTransport401RetriesOnce(t *testing.T) {
	t.Parallel()
	const payload = `{"query":"accounts","n":42}`
	tests := []struct {
		name     string
		newReq   func(url string) (*http.Request, error)
		wantBody string
	}{
		{"bytes.Reader body", func(url string) (*http.Request, error) {
			return http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(payload)))
		}, payload},
		{"strings.Reader body", func(url string) (*http.Request, error) {
			return http.NewRequest(http.MethodPut, url, strings.NewReader(payload))
		}, payload},
		{"own GetBody", func(url string) (*http.Request, error) {
			req, err := http.NewRequest(http.MethodPost, url, io.NopCloser(strings.NewReader(payload)))
			if err != nil {
				return nil, err
			}
			req.ContentLength = int64(len(payload))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(payload)), nil }
			return req, nil
		}, payload},
		{"no body", func(url string) (*http.Request, error) {
			return http.NewRequest(http.MethodGet, url, nil)
		}, ""},
		{"http.NoBody", func(url string) (*http.Request, error) {
			return http.NewRequest(http.MethodDelete, url, http.NoBody)
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, srv := startLoginServer(t)
			m := loopbackManager(s, srv, nil)
			client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}
			first := mustGetToken(t, m)
			s.rejectIssued()

			req, err := tc.newReq(s.URL + "/echo")
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("got status %d, want 200 after one login and a retry", resp.StatusCode)
			}
			checkLogins(t, s, 2)

			second, err := m.AccessToken()
			if err != nil {
				t.Fatal(err)
			}
			if second.Equal(first) {
				t.Fatal("the manager kept the rejected token")
			}
			hits := s.apiHits()
			if len(hits) != 2 {
				t.Fatalf("the API got %d requests, want 2", len(hits))
			}
			if !slices.Equal(hits[0].auth, []string{"Bearer " + first.Value()}) {
				t.Error("the first attempt did not carry the first token")
			}
			if !slices.Equal(hits[1].auth, []string{"Bearer " + second.Value()}) {
				t.Error("the retry did not carry the new token")
			}
			for i, h := range hits {
				if h.body != tc.wantBody {
					t.Errorf("attempt %d sent body %q, want %q", i+1, h.body, tc.wantBody)
				}
			}
		})
	}
}

func TestTransportSecond401Returned(t *testing.T) {
	t.Parallel()
	clock := newStepClock()
	s, srv := startLoginServer(t)
	s.configure(func(s *loginServer) { s.now, s.rejectAll = clock.Now, true })
	m := loopbackManager(s, srv, clock, withForcedLoginInterval(time.Hour))
	client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}

	send := func(ctx context.Context) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/echo", bytes.NewReader([]byte(`{}`)))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("got status %d, want 401", resp.StatusCode)
		}
		if !strings.Contains(string(body), "invalid access token") {
			t.Errorf("got body %q, want the server's 401 body", body)
		}
	}
	wantHits := func(want int) {
		t.Helper()
		if got := len(s.apiHits()); got != want {
			t.Errorf("got %d API requests, want %d", got, want)
		}
	}

	// Login, 401, one more login, retry, 401 to the caller.
	send(context.Background())
	checkLogins(t, s, 2)
	wantHits(2)

	// Inside the interval between forced logins the caller waits; one whose
	// context ends first gets its context's error, and no login is made.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/echo", bytes.NewReader([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got status %d, want the context's error", resp.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got error %v, want one matching context.DeadlineExceeded", err)
	}
	checkLogins(t, s, 2)
	wantHits(3)
}

func TestTransportForcedLoginsSpaced(t *testing.T) {
	t.Parallel()
	s, srv := startLoginServer(t)
	s.configure(func(s *loginServer) { s.rejectAll = true })
	m := loopbackManager(s, srv, nil, withForcedLoginInterval(0))
	client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}

	// Without an interval, each request makes one forced login and one
	// retry at most, never a loop.
	const requests = 3
	for range requests {
		resp, err := client.Post(s.URL+"/echo", "application/json", bytes.NewReader([]byte(`{}`)))
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		discard(resp)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("got status %d, want 401", resp.StatusCode)
		}
	}
	checkLogins(t, s, 1+requests)
	if got := len(s.apiHits()); got != 2*requests {
		t.Errorf("got %d API requests, want %d", got, 2*requests)
	}
}

func TestTransportOneShotBodyNoRetry(t *testing.T) {
	t.Parallel()
	s, srv := startLoginServer(t)
	m := loopbackManager(s, srv, nil)
	client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}
	first := mustGetToken(t, m)
	s.rejectIssued()

	const payload = `{"stream":true}`
	req, err := http.NewRequest(http.MethodPost, s.URL+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Body = io.NopCloser(strings.NewReader(payload))
	req.ContentLength = int64(len(payload))
	if req.GetBody != nil {
		t.Fatal("the request has GetBody, want a one-shot body")
	}

	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("got status %d, want the 401", resp.StatusCode)
	}
	if !strings.Contains(string(body), "invalid access token") {
		t.Errorf("got body %q, want the server's 401 body", body)
	}
	// The rejected token is replaced even though this request is not sent
	// again, so the next request does not meet the same 401.
	checkLogins(t, s, 2)
	if got, err := m.AccessToken(); err != nil || got.Equal(first) {
		t.Errorf("AccessToken after the 401: err %v, want a new token", err)
	}
	hits := s.apiHits()
	if len(hits) != 1 {
		t.Fatalf("got %d API requests, want 1", len(hits))
	}
	if hits[0].body != payload {
		t.Errorf("the API got body %q, want the caller's body %q", hits[0].body, payload)
	}
}

func TestTransportConcurrent401OneLogin(t *testing.T) {
	t.Parallel()
	const callers = 20
	s, srv := startLoginServer(t)
	m := loopbackManager(s, srv, nil)
	client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}
	first := mustGetToken(t, m)
	s.rejectIssued()

	// Hold every request with the first token until all have arrived, so
	// that all of them get their 401 together.
	firstBearer := "Bearer " + first.Value()
	allArrived := make(chan struct{})
	var arrived atomic.Int32
	s.configure(func(s *loginServer) {
		s.apiHold = func(r *http.Request) {
			if r.Header.Get("Authorization") != firstBearer {
				return
			}
			if arrived.Add(1) == callers {
				close(allArrived)
			}
			select {
			case <-allArrived:
			case <-r.Context().Done():
			case <-s.closing:
			}
		}
	})

	var wg sync.WaitGroup
	statuses := make([]int, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			resp, err := client.Post(s.URL+"/echo", "application/json", bytes.NewReader([]byte(`{}`)))
			if err != nil {
				errs[i] = err
				return
			}
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		})
	}
	wg.Wait()

	for i := range callers {
		if errs[i] != nil {
			t.Errorf("caller %d: got error %v, want none", i, errs[i])
			continue
		}
		if statuses[i] != http.StatusOK {
			t.Errorf("caller %d: got status %d, want 200", i, statuses[i])
		}
	}
	checkLogins(t, s, 2)
	second, err := m.AccessToken()
	if err != nil {
		t.Fatal(err)
	}
	var withFirst, withSecond int
	for _, h := range s.apiHits() {
		switch {
		case slices.Equal(h.auth, []string{firstBearer}):
			withFirst++
		case slices.Equal(h.auth, []string{"Bearer " + second.Value()}):
			withSecond++
		}
	}
	if withFirst != callers {
		t.Errorf("got %d requests with the first token, want %d", withFirst, callers)
	}
	if withSecond != callers {
		t.Errorf("got %d requests with the new token, want %d", withSecond, callers)
	}
}

func TestTransportRejectsRemotePlainHTTP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		base    string
		allowed []string
		url     string
	}{
		{"http base URL", "http://norman.invalid/v0", nil, "http://norman.invalid/v0/echo"},
		{"http base URL with a port", "http://norman.invalid:8080/v0", nil, "http://norman.invalid:8080/v0/echo"},
		{"name that starts like a loopback address", "http://127.0.0.1.invalid/v0", nil, "http://127.0.0.1.invalid/v0/echo"},
		{"name that starts with localhost", "http://localhost.invalid/v0", nil, "http://localhost.invalid/v0/echo"},
		{"http allowed origin", memBaseURL, []string{"http://files.norman.invalid"}, "http://files.norman.invalid/upload"},
		{"http allowed origin, request to the base", memBaseURL, []string{"http://files.norman.invalid"}, memBaseURL + "/echo"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			login := &forbiddenTransport{t: t}
			base := &forbiddenTransport{t: t}
			m := newQuietManager(tc.base, WithHTTPClient(&http.Client{Transport: login}), WithAllowedOrigins(tc.allowed...))

			if _, err := m.Token(context.Background()); !errors.Is(err, ErrInsecureURL) {
				t.Errorf("Token: got error %v, want ErrInsecureURL", err)
			}
			if err := m.InvalidateAccessToken(context.Background()); !errors.Is(err, ErrInsecureURL) {
				t.Errorf("InvalidateAccessToken: got error %v, want ErrInsecureURL", err)
			}

			body := newCloseCountingBody("{}")
			req, err := http.NewRequest(http.MethodPost, tc.url, body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := NewTransport(m, base).RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
			}
			if !errors.Is(err, ErrInsecureURL) {
				t.Errorf("RoundTrip: got error %v, want ErrInsecureURL", err)
			}
			if got := body.closes.Load(); got != 1 {
				t.Errorf("the request body was closed %d times, want 1", got)
			}
			if got := login.calls.Load() + base.calls.Load(); got != 0 {
				t.Errorf("%d requests were sent, want 0", got)
			}
		})
	}
}

func TestTransportAllowsHTTPSAndLoopback(t *testing.T) {
	t.Parallel()
	tests := []string{
		"https://norman.invalid/v0",
		"https://norman.invalid:8443/v0/",
		"http://127.0.0.1:9/v0",
		"http://127.8.9.10:9/v0",
		"http://[::1]:9/v0",
		"http://localhost:9/v0",
		"http://LocalHost/v0",
	}
	for _, base := range tests {
		t.Run(base, func(t *testing.T) {
			t.Parallel()
			m, s, mem := memManager(t, base)
			if _, err := m.Token(context.Background()); err != nil {
				t.Fatalf("Token: %v", err)
			}

			req, err := http.NewRequest(http.MethodGet, strings.TrimSuffix(base, "/")+"/echo", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := NewTransport(m, mem).RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("got status %d, want 200 with the token", resp.StatusCode)
			}
			checkLogins(t, s, 1)
			if got := mem.calls.Load(); got != 2 {
				t.Errorf("the in-memory transport got %d requests, want 2 (login and API)", got)
			}
		})
	}
}

func TestTransportLate401UsesNewToken(t *testing.T) {
	t.Parallel()
	s, srv := startLoginServer(t)
	m := loopbackManager(s, srv, nil)
	client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}
	first := mustGetToken(t, m)
	s.rejectIssued()

	// Two requests leave with the first token. The server returns their
	// 401s one after the other, so the second comes after the new login.
	firstBearer := "Bearer " + first.Value()
	bothArrived := make(chan struct{})
	release := []chan struct{}{make(chan struct{}), make(chan struct{})}
	var arrived atomic.Int32
	s.configure(func(s *loginServer) {
		s.apiHold = func(r *http.Request) {
			if r.Header.Get("Authorization") != firstBearer {
				return
			}
			n := arrived.Add(1)
			if n == 2 {
				close(bothArrived)
			}
			select {
			case <-release[n-1]:
			case <-r.Context().Done():
			case <-s.closing:
			}
		}
	})

	results := make(chan int, 2)
	for range 2 {
		go func() {
			resp, err := client.Post(s.URL+"/echo", "application/json", bytes.NewReader([]byte(`{}`)))
			if err != nil {
				results <- 0
				return
			}
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	receive(t, bothArrived, "both requests to reach the server")
	close(release[0])
	if got := receive(t, results, "the first response"); got != http.StatusOK {
		t.Errorf("first request: got status %d, want 200", got)
	}
	checkLogins(t, s, 2)
	close(release[1])
	if got := receive(t, results, "the second response"); got != http.StatusOK {
		t.Errorf("second request: got status %d, want 200", got)
	}
	checkLogins(t, s, 2)
}

// receive returns the next value from ch, failing the test if none comes
// in time.
func receive[T any](t *testing.T, ch <-chan T, event string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", event)
		panic("unreachable")
	}
}

func TestTransportRevokedKeyBackoffDoubles(t *testing.T) {
	t.Parallel()
	clock := newStepClock()
	s, srv := startLoginServer(t)
	s.configure(func(s *loginServer) { s.now = clock.Now })
	m := loopbackManager(s, srv, clock, withForcedLoginInterval(0))
	client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}
	mustGetToken(t, m)

	// The API now rejects the cached token, which has not expired, and the
	// server rejects the key.
	s.configure(func(s *loginServer) {
		s.rejectAll = true
		delete(s.keys, aliceKey)
	})
	send := func() {
		t.Helper()
		resp, err := client.Post(s.URL+"/echo", "application/json", bytes.NewReader([]byte(`{}`)))
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		discard(resp)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("got status %d, want 401", resp.StatusCode)
		}
	}

	// Each rejected login doubles the pause before the next one, although
	// the rejected token has not expired on the clock.
	steps := []struct {
		advance    time.Duration
		wantLogins int64
	}{
		{0, 2},               // forced login, rejected: pause 1 s
		{0, 2},               // inside the pause
		{time.Second, 3},     // rejected again: pause 2 s
		{time.Second, 3},     // inside the pause
		{time.Second, 4},     // rejected again: pause 4 s
		{3 * time.Second, 4}, // inside the pause
	}
	for i, step := range steps {
		clock.Advance(step.advance)
		send()
		if got := s.logins.Load(); got != step.wantLogins {
			t.Fatalf("step %d: got %d logins, want %d", i, got, step.wantLogins)
		}
	}
}
