// Command storm releases a crowd of concurrent requests at the same instant
// on a transport whose token is missing (cold) or expired. It reports how
// many logins the crowd caused, how long it took until every request had a
// token, and how much memory the crowd needed.
//
// Requests go through norman.Transport, or through oauth2.Transport with
// oauth2.ReuseTokenSource over a TokenSource that logs in to the same
// server, over an in-memory base transport, so that only logins reach the
// loopback normantest server. A row without authentication gives the cost
// of the goroutines themselves.
//
// Memory is sampled with runtime/metrics every -sample while the crowd
// runs: the peak of the in-use heap (as MemStats.HeapInuse), of goroutine
// stacks (as MemStats.StackInuse) and of all memory mapped by the runtime
// (as MemStats.Sys), each less its value before the crowd's goroutines
// were started, so the goroutines' own stacks and requests are included.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"

	norman "github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/bench/internal/harness"
	"github.com/norman-ml/norman-go/normantest"
)

// apiKey is the fake key of the storm account.
const apiKey = "nk-test-storm"

type config struct {
	callers    int
	loginDelay time.Duration
	sample     time.Duration
	timeout    time.Duration
}

// crowd is one storm: a transport, built just before the storm so that an
// expired token is still expired when the crowd is released.
type crowd struct {
	name  string
	build func() http.RoundTripper
}

// outcome is the result of one crowd.
type outcome struct {
	logins      int
	failures    int
	allDone     time.Duration
	heap, stack uint64 // peak over the baseline, bytes
	sys         uint64
}

func main() {
	var cfg config
	var only string
	flag.IntVar(&cfg.callers, "callers", 10_000, "concurrent requests released at once")
	flag.DurationVar(&cfg.loginDelay, "login-delay", 200*time.Millisecond, "time the server takes to answer each login")
	flag.DurationVar(&cfg.sample, "sample", time.Millisecond, "memory sampling period")
	flag.DurationVar(&cfg.timeout, "timeout", 30*time.Second, "deadline of every request")
	flag.StringVar(&only, "crowd", "", "run only the crowd of this name, in this process (used by the parent run)")
	flag.Parse()
	if cfg.callers < 1 || cfg.sample <= 0 || cfg.timeout <= 0 {
		fmt.Fprintln(os.Stderr, "storm: -callers, -sample and -timeout must be positive")
		os.Exit(2)
	}

	if only != "" {
		runOne(only, cfg)
		return
	}

	// Each crowd runs in a process of its own, so that memory the runtime
	// kept from one crowd does not hide the next one's growth.
	fmt.Printf("storm: %d requests released at once, login delay %v, GOMAXPROCS %d, one process per row\n",
		cfg.callers, cfg.loginDelay, runtime.GOMAXPROCS(0))
	fmt.Printf("all done: from the release to the last response; peaks: largest value while the crowd ran, less the value before its goroutines started\n")
	fmt.Printf("\n%-16s %7s %9s %12s %12s %12s %12s\n",
		"client/token", "logins", "failures", "all done", "heap peak", "stacks peak", "sys peak")
	self, err := os.Executable()
	if err != nil {
		fail("finding this program", err)
	}
	for _, name := range crowdNames {
		cmd := exec.Command(self, "-crowd", name,
			"-callers", strconv.Itoa(cfg.callers), "-login-delay", cfg.loginDelay.String(),
			"-sample", cfg.sample.String(), "-timeout", cfg.timeout.String())
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			fail("crowd "+name, err)
		}
	}
}

// runOne runs the crowd called name against a server of its own and prints
// its row.
func runOne(name string, cfg config) {
	srv := normantest.NewServer()
	defer srv.Close()
	srv.AddAccount("storm", apiKey)
	srv.SetLoginDelay(cfg.loginDelay)

	var build func() http.RoundTripper
	for _, c := range crowds(srv) {
		if c.name == name {
			build = c.build
		}
	}
	if build == nil {
		fmt.Fprintf(os.Stderr, "storm: no crowd named %q; the crowds are %s\n", name, strings.Join(crowdNames, ", "))
		os.Exit(2)
	}

	rt := build()
	before := srv.Logins()
	o := storm(rt, srv.URL+"/authenticate/accounts/get", cfg)
	o.logins = srv.Logins() - before
	fmt.Printf("%-16s %7d %9d %12s %12s %12s %12s\n", name, o.logins, o.failures,
		o.allDone.Round(10*time.Microsecond), mib(o.heap), mib(o.stack), mib(o.sys))
}

// crowdNames are the crowds in the order they run.
var crowdNames = []string{"none (floor)", "norman/cold", "norman/expired", "oauth2/cold", "oauth2/expired"}

// crowds lists the storms: no authentication, then norman and oauth2, each
// first with no token at all and then with a token that has just expired.
func crowds(srv *normantest.Server) []crowd {
	loginClient := &http.Client{Transport: srv.Client().Transport}
	normanRT := func(expired bool) http.RoundTripper {
		mgr := norman.NewManager(
			norman.WithBaseURL(srv.URL),
			norman.WithAPIKey(apiKey),
			norman.WithHTTPClient(loginClient),
			norman.WithLogger(slog.New(slog.DiscardHandler)),
		)
		if expired {
			// A 1 s token counts as expired 0.1 s before its exp, so log in
			// once and wait until the manager reports it as expired.
			srv.SetTokenLifetime(time.Second)
			if _, err := mgr.Token(context.Background()); err != nil {
				fail("norman warm-up login", err)
			}
			srv.SetTokenLifetime(time.Hour)
			for !mgr.AccessTokenExpired() {
				time.Sleep(10 * time.Millisecond)
			}
		}
		return norman.NewTransport(mgr, harness.NewCanned())
	}
	oauth2RT := func(expired bool) http.RoundTripper {
		src := &harness.LoginSource{Client: loginClient, BaseURL: srv.URL, APIKey: apiKey}
		var first *oauth2.Token
		if expired {
			tok, err := src.Token()
			if err != nil {
				fail("oauth2 warm-up login", err)
			}
			tok.Expiry = time.Now().Add(-time.Second)
			first = tok
		}
		return &oauth2.Transport{Source: oauth2.ReuseTokenSource(first, src), Base: harness.NewCanned()}
	}
	return []crowd{
		{"none (floor)", func() http.RoundTripper { return harness.NewCanned() }},
		{"norman/cold", func() http.RoundTripper { return normanRT(false) }},
		{"norman/expired", func() http.RoundTripper { return normanRT(true) }},
		{"oauth2/cold", func() http.RoundTripper { return oauth2RT(false) }},
		{"oauth2/expired", func() http.RoundTripper { return oauth2RT(true) }},
	}
}

// storm starts cfg.callers goroutines that each prepare a request to url,
// releases them at once to send it through rt, and waits for all of them.
// It samples memory from the release to the last response.
func storm(rt http.RoundTripper, url string, cfg config) outcome {
	runtime.GC()
	baseline := readMemory()

	ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
	defer cancel()
	release := make(chan struct{})
	var ready, done sync.WaitGroup
	var failures atomic.Int64
	ready.Add(cfg.callers)
	for range cfg.callers {
		done.Go(func() {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
			ready.Done()
			if err == nil {
				<-release
				var resp *http.Response
				if resp, err = rt.RoundTrip(req); err == nil {
					resp.Body.Close()
				}
			}
			if err != nil {
				failures.Add(1)
			}
		})
	}
	ready.Wait()

	stopSampling := make(chan struct{})
	peak := make(chan memory)
	go func() {
		p := readMemory()
		tick := time.NewTicker(cfg.sample)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				p = p.max(readMemory())
			case <-stopSampling:
				peak <- p.max(readMemory())
				return
			}
		}
	}()

	start := time.Now()
	close(release)
	done.Wait()
	allDone := time.Since(start)
	close(stopSampling)
	p := <-peak

	return outcome{
		failures: int(failures.Load()),
		allDone:  allDone,
		heap:     sub(p.heap, baseline.heap),
		stack:    sub(p.stack, baseline.stack),
		sys:      sub(p.sys, baseline.sys),
	}
}

// memory is one reading of the runtime's memory classes.
type memory struct{ heap, stack, sys uint64 }

var samples = []metrics.Sample{
	{Name: "/memory/classes/heap/objects:bytes"},
	{Name: "/memory/classes/heap/unused:bytes"},
	{Name: "/memory/classes/heap/stacks:bytes"},
	{Name: "/memory/classes/total:bytes"},
}

func readMemory() memory {
	s := make([]metrics.Sample, len(samples))
	copy(s, samples)
	metrics.Read(s)
	return memory{
		heap:  s[0].Value.Uint64() + s[1].Value.Uint64(),
		stack: s[2].Value.Uint64(),
		sys:   s[3].Value.Uint64(),
	}
}

func (m memory) max(o memory) memory {
	return memory{heap: max(m.heap, o.heap), stack: max(m.stack, o.stack), sys: max(m.sys, o.sys)}
}

func sub(a, b uint64) uint64 {
	if a < b {
		return 0
	}
	return a - b
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "storm: %s: %v\n", what, err)
	os.Exit(1)
}
