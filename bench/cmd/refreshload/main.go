// Command refreshload measures request latency while the access token
// expires and is renewed under steady load.
//
// It starts a loopback normantest server whose tokens live -lifetime and
// whose logins each take -login-delay, then, for norman.Transport and for
// oauth2.Transport in turn, runs -goroutines goroutines that each send a
// request to the authenticated endpoint every -interval for -duration. It
// prints the number of requests, the median, 99th percentile and largest
// request latency, the logins each transport made, and how many token
// lifetimes the run spans.
//
// Besides the whole request latency, it reports the token wait: the time
// from the start of a request to the moment the authenticating transport
// hands it to its base transport. That is the time a request spent getting
// a token, apart from the server's own delays, which both transports share.
//
// The oauth2 side logs in through a TokenSource that calls the same login
// endpoint and takes the token's Expiry from its JWT exp claim. By default
// oauth2 treats a token as expired 10 s before Expiry, so every token
// shorter than that would count as expired at once. The source is therefore
// wrapped with oauth2.ReuseTokenSourceWithExpiry and an early window of
// -oauth2-early.
//
// A third run, "none", gives the latency that the machine and the server
// add by themselves. The same loops send the same requests through a plain
// http.Transport with a bearer header set by hand. They go to a second
// server whose token outlives the run, so nothing logs in. The largest
// latency of this run is the floor under the other two.
//
// Every request loop is bounded by -duration and by -max-requests, and the
// program only talks to the servers it starts on 127.0.0.1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	norman "github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/bench/internal/harness"
	"github.com/norman-ml/norman-go/normantest"
)

// apiKey is the fake key of the load test account.
const apiKey = "nk-test-refreshload"

type config struct {
	goroutines  int
	lifetime    time.Duration
	duration    time.Duration
	loginDelay  time.Duration
	interval    time.Duration
	oauth2Early time.Duration
	maxRequests int
	verbose     bool
}

// result is the outcome of one transport's run.
type result struct {
	name      string
	latencies harness.Latencies // whole requests
	waits     harness.Latencies // start of a request to its hand-off to the base transport
	failures  int               // transport errors and non-200 responses
	logins    int               // logins during the measured run, after the warm-up
}

func main() {
	var cfg config
	flag.IntVar(&cfg.goroutines, "goroutines", 16, "concurrent request loops per transport")
	flag.DurationVar(&cfg.lifetime, "lifetime", 2*time.Second, "access token lifetime set on the server (whole seconds)")
	flag.DurationVar(&cfg.duration, "duration", 11*time.Second, "measured run per transport")
	flag.DurationVar(&cfg.loginDelay, "login-delay", 200*time.Millisecond, "time the server takes to answer each login")
	flag.DurationVar(&cfg.interval, "interval", 10*time.Millisecond, "pause between the requests of one loop")
	flag.DurationVar(&cfg.oauth2Early, "oauth2-early", 200*time.Millisecond, "early expiry window given to oauth2.ReuseTokenSourceWithExpiry")
	flag.IntVar(&cfg.maxRequests, "max-requests", 100_000, "upper bound on the requests of one loop")
	flag.BoolVar(&cfg.verbose, "v", false, "print the norman manager's log records (logins, refreshes) to standard error")
	flag.Parse()
	if cfg.goroutines < 1 || cfg.lifetime <= 0 || cfg.duration <= 0 || cfg.interval < 0 || cfg.maxRequests < 1 {
		fmt.Fprintln(os.Stderr, "refreshload: -goroutines, -lifetime, -duration and -max-requests must be positive")
		os.Exit(2)
	}

	srv := normantest.NewServer()
	defer srv.Close()
	srv.AddAccount("refreshload", apiKey)
	srv.SetTokenLifetime(cfg.lifetime)
	srv.SetLoginDelay(cfg.loginDelay)

	lifetimes := cfg.duration.Seconds() / cfg.lifetime.Seconds()
	fmt.Printf("refresh under load: %d goroutines, one request each per %v, token lifetime %v, login delay %v, %v per transport\n",
		cfg.goroutines, cfg.interval, cfg.lifetime, cfg.loginDelay, cfg.duration)
	fmt.Printf("lifetimes: %.1f token lifetimes per run (%d started)\n", lifetimes, int(math.Ceil(lifetimes)))
	fmt.Printf("note: the server writes iat and exp in whole seconds, so a token issued f seconds into a second lives %v - f after it arrives\n",
		cfg.lifetime)
	fmt.Printf("oauth2: Token.Expiry = JWT exp; ReuseTokenSourceWithExpiry early window %v instead of the default 10s, which would treat every %v token as expired\n",
		cfg.oauth2Early, cfg.lifetime)

	results := []result{
		runNorman(srv, cfg),
		runOAuth2(srv, cfg),
		runNone(cfg),
	}
	fmt.Println("wait: from the start of a request to its hand-off to the base transport, the time spent getting a token")
	fmt.Printf("\n%-7s %9s %9s %9s %9s %9s %7s %11s %11s\n",
		"client", "requests", "failures", "p50", "p99", "max", "logins", "wait p99", "wait max")
	for _, r := range results {
		fmt.Printf("%-7s %9d %9d %9s %9s %9s %7d %11s %11s\n", r.name, r.latencies.Count, r.failures,
			fmtDur(r.latencies.P50), fmtDur(r.latencies.P99), fmtDur(r.latencies.Max), r.logins,
			fmtDur(r.waits.P99), fmtDur(r.waits.Max))
	}
}

// handOffKey is the context key of the *time.Time in which handOff records
// when a request reached the base transport.
type handOffKey struct{}

// handOff is the base transport of the authenticating transports: it
// records when each request arrives and passes it on.
type handOff struct{ next http.RoundTripper }

func (h handOff) RoundTrip(req *http.Request) (*http.Response, error) {
	if at, ok := req.Context().Value(handOffKey{}).(*time.Time); ok {
		*at = time.Now()
	}
	return h.next.RoundTrip(req)
}

func newBase(cfg config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 2 * cfg.goroutines
	t.MaxIdleConnsPerHost = 2 * cfg.goroutines
	return t
}

func runNorman(srv *normantest.Server, cfg config) result {
	logger := slog.New(slog.DiscardHandler)
	if cfg.verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	mgr := norman.NewManager(
		norman.WithLogger(logger),
		norman.WithBaseURL(srv.URL),
		norman.WithAPIKey(apiKey),
		norman.WithHTTPClient(&http.Client{Transport: newBase(cfg)}),
	)
	base := newBase(cfg)
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: norman.NewTransport(mgr, handOff{base})}
	return measure("norman", srv, client, cfg)
}

func runOAuth2(srv *normantest.Server, cfg config) result {
	login := &harness.LoginSource{
		Client:  &http.Client{Transport: newBase(cfg)},
		BaseURL: srv.URL,
		APIKey:  apiKey,
	}
	base := newBase(cfg)
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: &oauth2.Transport{
		Source: oauth2.ReuseTokenSourceWithExpiry(nil, login, cfg.oauth2Early),
		Base:   handOff{base},
	}}
	return measure("oauth2", srv, client, cfg)
}

// runNone runs the request loops without an authenticating transport,
// against a server of its own whose token lives longer than the run.
func runNone(cfg config) result {
	srv := normantest.NewServer()
	defer srv.Close()
	srv.AddAccount("refreshload", apiKey)
	srv.SetTokenLifetime(cfg.duration + time.Hour)
	srv.SetLoginDelay(cfg.loginDelay)

	login := &harness.LoginSource{BaseURL: srv.URL, APIKey: apiKey}
	tok, err := login.Token()
	if err != nil {
		fmt.Fprintln(os.Stderr, "refreshload: none: login failed:", err)
		os.Exit(1)
	}
	bearer := "Bearer " + tok.AccessToken

	base := newBase(cfg)
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: setHeader{next: handOff{base}, key: "Authorization", value: bearer}}
	return measure("none", srv, client, cfg)
}

// setHeader is a RoundTripper that sets one header on a copy of each request.
type setHeader struct {
	next       http.RoundTripper
	key, value string
}

func (h setHeader) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Set(h.key, h.value)
	return h.next.RoundTrip(r)
}

// measure logs in with one request, outside the measurement, and then runs
// the request loops for cfg.duration.
func measure(name string, srv *normantest.Server, client *http.Client, cfg config) result {
	url := srv.URL + "/authenticate/accounts/get"
	send := func(ctx context.Context, handedOff *time.Time) error {
		ctx = context.WithValue(ctx, handOffKey{}, handedOff)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return err
	}

	if err := send(context.Background(), new(time.Time)); err != nil {
		fmt.Fprintf(os.Stderr, "refreshload: %s: warm-up request failed: %v\n", name, err)
		os.Exit(1)
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration+5*time.Second)
	defer cancel()
	loginsBefore := srv.Logins()
	start := time.Now()
	deadline := start.Add(cfg.duration)

	var failures atomic.Int64
	var firstErr sync.Once
	perLoop := make([][]time.Duration, cfg.goroutines)
	waitsPerLoop := make([][]time.Duration, cfg.goroutines)
	var wg sync.WaitGroup
	for g := range cfg.goroutines {
		wg.Go(func() {
			// Spread the loops over one interval, so requests arrive evenly.
			next := start.Add(cfg.interval * time.Duration(g) / time.Duration(cfg.goroutines))
			capacity := min(cfg.maxRequests, int(cfg.duration/max(cfg.interval, time.Millisecond))+1)
			lat := make([]time.Duration, 0, capacity)
			waits := make([]time.Duration, 0, capacity)
			var handedOff time.Time
			for range cfg.maxRequests {
				time.Sleep(time.Until(next))
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				handedOff = time.Time{}
				err := send(ctx, &handedOff)
				lat = append(lat, time.Since(t0))
				if !handedOff.IsZero() {
					waits = append(waits, handedOff.Sub(t0))
				}
				if err != nil {
					failures.Add(1)
					firstErr.Do(func() { fmt.Fprintf(os.Stderr, "refreshload: %s: first failure: %v\n", name, err) })
					if errors.Is(err, context.DeadlineExceeded) {
						break
					}
				}
				next = next.Add(cfg.interval)
			}
			perLoop[g], waitsPerLoop[g] = lat, waits
		})
	}
	wg.Wait()

	return result{
		name:      name,
		latencies: harness.Summarize(slices.Concat(perLoop...)),
		waits:     harness.Summarize(slices.Concat(waitsPerLoop...)),
		failures:  int(failures.Load()),
		logins:    srv.Logins() - loginsBefore,
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
}
