package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"golang.org/x/oauth2"

	norman "github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/bench/internal/harness"
	"github.com/norman-ml/norman-go/normantest"
)

// benchKey is the fake API key of the benchmark account.
const benchKey = "nk-test-bench"

// Shared by every benchmark of the package: one server, one logged-in
// manager, and its access token for the oauth2 side.
var (
	server  *normantest.Server
	manager *norman.Manager
	token   string // the manager's access token, also given to oauth2
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	server = normantest.NewServer()
	defer server.Close()
	// A day-long token stays fresh (outside the 5-minute stale window) for
	// any benchmark run, so only the hot path is measured.
	server.SetTokenLifetime(24 * time.Hour)
	server.AddAccount("bench", benchKey)

	manager = norman.NewManager(
		norman.WithBaseURL(server.URL),
		norman.WithAPIKey(benchKey),
		norman.WithHTTPClient(server.Client()),
	)
	tok, err := manager.Token(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: login failed:", err)
		return 1
	}
	token = tok.Value()
	return m.Run()
}

// newAPIRequest returns a request to the Norman API's origin, so that
// norman.Transport attaches the token, with the headers of a typical JSON
// call.
func newAPIRequest(tb testing.TB) *http.Request {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPost, server.URL+"/authenticate/accounts/get", nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return req
}

func normanTransport(base http.RoundTripper) http.RoundTripper {
	return norman.NewTransport(manager, base)
}

func oauth2Transport(base http.RoundTripper) http.RoundTripper {
	static := &oauth2.Token{AccessToken: token, TokenType: "Bearer", Expiry: time.Now().Add(24 * time.Hour)}
	return &oauth2.Transport{
		Source: oauth2.ReuseTokenSource(nil, oauth2.StaticTokenSource(static)),
		Base:   base,
	}
}

func floorTransport(base http.RoundTripper) http.RoundTripper { return base }

// checkAuthorization sends one request through the transport that wrap
// builds and fails unless the base saw want as the Authorization header.
func checkAuthorization(b *testing.B, wrap func(http.RoundTripper) http.RoundTripper, want string) {
	b.Helper()
	rec := harness.NewRecorder()
	resp, err := wrap(rec).RoundTrip(newAPIRequest(b))
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if rec.Authorization != want {
		b.Fatalf("Authorization header sent: %d bytes, want %d bytes", len(rec.Authorization), len(want))
	}
}

// benchmarkTransport measures round trips through the transport that wrap
// builds around an in-memory base, serially and from GOMAXPROCS goroutines.
func benchmarkTransport(b *testing.B, wrap func(http.RoundTripper) http.RoundTripper, wantAuth string) {
	checkAuthorization(b, wrap, wantAuth)
	rt := wrap(harness.NewCanned())

	b.Run("serial", func(b *testing.B) {
		req := newAPIRequest(b)
		b.ReportAllocs()
		for b.Loop() {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
		}
	})
	b.Run("parallel", func(b *testing.B) {
		req := newAPIRequest(b)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := rt.RoundTrip(req)
				if err != nil {
					b.Error(err)
					return
				}
				resp.Body.Close()
			}
		})
	})
}

// BenchmarkFloor is the base RoundTripper alone, with no authentication.
func BenchmarkFloor(b *testing.B) {
	benchmarkTransport(b, floorTransport, "")
}

// BenchmarkNorman is norman.Transport with a fresh token.
func BenchmarkNorman(b *testing.B) {
	benchmarkTransport(b, normanTransport, "Bearer "+token)
}

// BenchmarkOAuth2 is oauth2.Transport over oauth2.ReuseTokenSource with a
// static token that expires in a day.
func BenchmarkOAuth2(b *testing.B) {
	benchmarkTransport(b, oauth2Transport, "Bearer "+token)
}

// TestTokenIsAttached checks, outside any benchmark, that the request URL
// of the benchmarks matches the base URL's origin.
func TestTokenIsAttached(t *testing.T) {
	rec := harness.NewRecorder()
	resp, err := normanTransport(rec).RoundTrip(newAPIRequest(t))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if rec.Authorization != "Bearer "+token {
		t.Fatalf("norman.Transport sent an Authorization header of %d bytes, want the bearer token", len(rec.Authorization))
	}
}
