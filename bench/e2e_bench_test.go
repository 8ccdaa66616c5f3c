package bench

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"

	norman "github.com/norman-ml/norman-go"
)

// e2eBody is the response body of the loopback API server, a small JSON
// object the size of a short API response.
var e2eBody = []byte(`{"ok":true}` + "\n")

// newE2EServer starts a keep-alive loopback server that plays the Norman
// API. It passes logins under /v0/authenticate/login/key to the normantest
// server, so the manager gets real tokens. Every other request gets e2eBody
// at once, without a token check, so that the bare client and the norman
// client cost the server exactly the same.
func newE2EServer(tb testing.TB) *httptest.Server {
	tb.Helper()
	target, err := url.Parse(server.URL)
	if err != nil {
		tb.Fatal(err)
	}
	target.Path = ""
	logins := httputil.NewSingleHostReverseProxy(target)
	logins.Transport = server.Client().Transport

	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v0/authenticate/login/key" {
			logins.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(e2eBody)
	}))
	tb.Cleanup(srv.Close)
	return srv
}

// newKeepAliveTransport returns a transport that keeps enough idle
// connections for every benchmark goroutine.
func newKeepAliveTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 64
	t.MaxIdleConnsPerHost = 64
	return t
}

// BenchmarkE2E sends requests over loopback HTTP/1.1 with keep-alive:
// "bare" is an http.Client whose requests carry a bearer token set by hand,
// "norman" is an http.Client with norman.Transport, which sets the same
// header itself. Both report requests per second. The two serial
// sub-benchmarks run back to back, then the two parallel ones, and each
// starts without idle connections, so that neither client inherits the
// other's connections or runs much later than its counterpart.
func BenchmarkE2E(b *testing.B) {
	srv := newE2EServer(b)
	baseURL := srv.URL + "/v0"
	apiURL := baseURL + "/bench/ping"

	mgr := norman.NewManager(norman.WithBaseURL(baseURL), norman.WithAPIKey(benchKey))
	normanBase := newKeepAliveTransport()
	b.Cleanup(normanBase.CloseIdleConnections)
	normanClient := &http.Client{Transport: norman.NewTransport(mgr, normanBase)}
	tok, err := mgr.Token(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	bearer := "Bearer " + tok.Value()

	bareBase := newKeepAliveTransport()
	b.Cleanup(bareBase.CloseIdleConnections)
	bareClient := &http.Client{Transport: bareBase}

	type client struct {
		name     string
		client   *http.Client
		setToken bool
	}
	clients := []client{
		{"bare", bareClient, true},
		{"norman", normanClient, false},
	}
	do := func(b *testing.B, c client) error {
		req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, apiURL, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/json")
		if c.setToken {
			req.Header.Set("Authorization", bearer)
		}
		resp, err := c.client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			b.Errorf("status %d", resp.StatusCode)
		}
		return err
	}
	reset := func(b *testing.B) {
		bareBase.CloseIdleConnections()
		normanBase.CloseIdleConnections()
		b.ReportAllocs()
	}
	reportRate := func(b *testing.B) {
		if s := b.Elapsed().Seconds(); s > 0 {
			b.ReportMetric(float64(b.N)/s, "req/s")
		}
	}

	for _, c := range clients {
		b.Run(c.name+"/serial", func(b *testing.B) {
			reset(b)
			for b.Loop() {
				if err := do(b, c); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b)
		})
	}
	for _, c := range clients {
		b.Run(c.name+"/parallel", func(b *testing.B) {
			reset(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := do(b, c); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b)
		})
	}
}
