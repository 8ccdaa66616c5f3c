package norman

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/norman-ml/norman-go/normantest"
)

const soakKey = "nk-test-soak-6f2b9e0c4d"

// fastClock runs speedup times faster than real time from clockStart. It
// has no mutable state, so the server and the manager can share it.
type fastClock struct {
	start   time.Time // real time, with its monotonic reading
	speedup time.Duration
}

func (c fastClock) Now() time.Time {
	return clockStart.Add(c.speedup * time.Since(c.start))
}

// faultyLogins passes login requests to base and makes about rate of them
// fail with 503 through the server's FailLogins, never more than
// loginRetryMax in a row, so that every login succeeds within its
// retries. The manager makes one login request at a time, so the failure
// set up before a request is the one that request gets.
type faultyLogins struct {
	base http.RoundTripper
	srv  *normantest.Server
	rate float64

	mu       sync.Mutex
	rng      *rand.Rand
	inRow    int
	injected int
}

func (rt *faultyLogins) RoundTrip(req *http.Request) (*http.Response, error) {
	rt.mu.Lock()
	fail := rt.inRow < loginRetryMax && rt.rng.Float64() < rt.rate
	if fail {
		rt.inRow++
		rt.injected++
		rt.srv.FailLogins(1, http.StatusServiceUnavailable)
	} else {
		rt.inRow = 0
	}
	rt.mu.Unlock()
	return rt.base.RoundTrip(req)
}

func (rt *faultyLogins) failures() int {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.injected
}

// jwtShape matches anything that looks like a JWT, to keep tokens out of
// failure messages.
var jwtShape = regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_.-]*`)

// TestSoak sends requests from many goroutines across more than 20 token
// lifetimes while tokens are revoked and logins fail, and checks that
// every request succeeds, that logins stay few, and that no goroutine is
// left behind. It does not run in parallel with other tests, so that the
// goroutine check counts only its own goroutines.
//
// Token lifetimes at the server are whole seconds. The server and the
// manager share a clock that runs 40 times faster than real time, so a
// 20 s lifetime lasts half a second. A token loses up to a second of its
// lifetime because iat is rounded down to a whole second, and that second
// is only 5% of a 20 s lifetime.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test: about 11 s")
	}
	leftovers := goleak.IgnoreCurrent()

	const (
		workers     = 50
		pace        = 20 * time.Millisecond // real time between one worker's requests
		speedup     = 40
		lifetime    = 20 * time.Second // on the shared clock
		lifetimes   = 21
		failRate    = 0.05
		revokeEvery = lifetime / 4 // on the shared clock
		revokeRate  = 0.25
		seed        = 20310506
	)
	clock := fastClock{start: time.Now(), speedup: speedup}
	end := clock.Now().Add(lifetimes * lifetime)
	rng := rand.New(rand.NewPCG(seed, seed))

	srv := normantest.NewServer()
	srvClosed := false
	defer func() {
		if !srvClosed {
			srv.Close()
		}
	}()
	srv.SetClock(clock.Now)
	srv.SetTokenLifetime(lifetime)
	srv.AddAccount("soak", soakKey)

	logins := &faultyLogins{base: srv.Client().Transport, srv: srv, rate: failRate, rng: rand.New(rand.NewPCG(seed, 1))}
	m := NewManager(WithBaseURL(srv.URL), WithAPIKey(soakKey), WithClock(clock.Now),
		WithHTTPClient(&http.Client{Transport: logins}), WithLogger(discardLogger()),
		withLoginRetry(loginRetryMax, time.Millisecond, 5*time.Millisecond),
		// The interval between forced logins is paced on the real clock, so
		// it shrinks with the shared clock's speed-up.
		withForcedLoginInterval(forcedLoginInterval/speedup))
	client := &http.Client{Transport: NewTransport(m, srv.Client().Transport)}

	// Workers hold gate for reading while a request is in flight, and the
	// revoker holds it for writing, so that a revocation falls between
	// requests. A request that leaves with a token issued before a
	// revocation can be retried with another such token and then fail.
	// TestReliabilityRevokedAfterRefresh covers that case.
	var gate sync.RWMutex
	stop := make(chan struct{})
	var sent, failed atomic.Int64
	var failMu sync.Mutex
	var failures []string
	fail := func(description string) {
		failed.Add(1)
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 5 {
			description = strings.ReplaceAll(description, soakKey, "<API key>")
			failures = append(failures, jwtShape.ReplaceAllString(description, "<JWT>"))
		}
	}

	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			ticker := time.NewTicker(pace)
			defer ticker.Stop()
			for range 10000 { // far more than the soak's time allows
				select {
				case <-stop:
					return
				case <-ticker.C:
				}
				gate.RLock()
				resp, err := client.Post(srv.URL+"/authenticate/accounts/get", "application/json", strings.NewReader(`{}`))
				if err == nil {
					resp.Body.Close()
				}
				gate.RUnlock()
				sent.Add(1)
				switch {
				case err != nil:
					fail(err.Error())
				case resp.StatusCode != http.StatusOK:
					fail(fmt.Sprintf("status %d", resp.StatusCode))
				}
			}
		})
	}

	revocations, skipped := 0, 0
	wg.Go(func() {
		ticker := time.NewTicker(revokeEvery / speedup)
		defer ticker.Stop()
		for {
			select {
			case <-stop:
				return
			case <-ticker.C:
			}
			if rng.Float64() >= revokeRate {
				continue
			}
			gate.Lock()
			m.mu.Lock()
			// Revoke only between logins, so that a revocation never lands
			// between a login and the first use of its token.
			st := m.state.Load()
			if m.flight == nil && st != nil {
				srv.RevokeTokens()
				revocations++
			} else {
				skipped++
			}
			m.mu.Unlock()
			gate.Unlock()
		}
	})

	realStart := time.Now()
	<-time.After(time.Duration(end.Sub(clock.Now())) / speedup)
	close(stop)
	wg.Wait()
	elapsed := time.Since(realStart)
	covered := clock.Now().Sub(clockStart)

	serverLogins := srv.Logins()
	injected := logins.failures()
	srv.Close()
	srvClosed = true

	t.Logf("%s real time, %s on the shared clock (%.1f lifetimes): %d requests, %d logins, %d revocations (%d skipped), %d failed login attempts",
		elapsed.Round(time.Millisecond), covered.Round(time.Second), float64(covered)/float64(lifetime),
		sent.Load(), serverLogins, revocations, skipped, injected)

	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed, want none; the first: %s", n, sent.Load(), strings.Join(failures, "; "))
	}
	if covered < 20*lifetime {
		t.Errorf("the soak covered %s, want at least 20 lifetimes of %s", covered.Round(time.Second), lifetime)
	}

	// A login replaces the token at the start of its stale window, no
	// sooner than (L - L/4) after the previous login, where L is at least
	// the lifetime less the second that iat is rounded down by.
	shortest := lifetime - time.Second
	refreshEvery := shortest - min(5*time.Minute, shortest/4)
	maxLogins := 1 + int(covered/refreshEvery) + revocations + injected
	if serverLogins > maxLogins {
		t.Errorf("got %d logins, want at most %d: 1 + one per %s + %d revocations + %d failed attempts",
			serverLogins, maxLogins, refreshEvery, revocations, injected)
	}
	if least := int(covered / lifetime); serverLogins-injected < least {
		t.Errorf("got %d successful logins, want at least %d, one per lifetime", serverLogins-injected, least)
	}
	if revocations == 0 {
		t.Error("no revocation happened; the soak did not test revoked tokens")
	}

	goleak.VerifyNone(t, leftovers)
}
