package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/normantest"
)

// Limits of the demo's flags. The defaults run the demo in about 5 s.
const (
	defaultDemoLifetime  = 2 * time.Second
	minDemoLifetime      = 2 * time.Second // a 1 s token can arrive with almost no time left
	maxDemoLifetime      = 10 * time.Second
	defaultDemoLifetimes = 3
	maxDemoLifetimes     = 10
)

// demoRecordWait bounds the wait for a log record that a step expects.
const demoRecordWait = 5 * time.Second

// demoWrongKey is the API key of the demo's second manager, which the
// server does not know.
const demoWrongKey = "nk-test-wrong"

// demoSecretSeen, when not nil, receives every secret the demo handles: the
// API key from the signup, the wrong key, and each access token sent.
// Tests set it to check that no secret reaches the output.
var demoSecretSeen func(secret string)

// demoOptions are the flags of the demo command.
type demoOptions struct {
	json      bool
	lifetime  time.Duration // token lifetime, whole seconds
	lifetimes int           // number of refreshes to wait for
}

func runDemo(ctx context.Context, env *environment, args []string) error {
	opts := demoOptions{}
	fs := newFlagSet(env, "demo", "demo [-json] [-lifetime DURATION] [-lifetimes N]", `Demo starts a Norman test server on a loopback address inside this process
and shows, step by step, what the norman package does:

  1. signs up an account and receives its API key, which prints as <redacted>;
  2. logs in for the first time;
  3. sends a request every lifetime/20 through an http.Client whose Transport
     is a norman.Transport, across several short token lifetimes, and reports
     each refresh with its reason and the new token's expiry;
  4. revokes every token on the server and shows the next request receive 401,
     log in again once and succeed when resent;
  5. shows a second manager with a wrong API key fail with a clear error,
     without a new login for each request;
  6. shows a third manager, created with norman.WithJWKS, verify the tokens
     of its login against the server's JSON Web Key Set and print the
     verified claims of the ID token;
  7. sums up the requests, logins, refreshes and failures.

The demo uses no network beyond the loopback address and prints no API key
or token. It exits with status 1 if anything differs from the steps above.
`)
	fs.BoolVar(&opts.json, "json", false, "print one JSON object per line instead of sentences")
	fs.DurationVar(&opts.lifetime, "lifetime", defaultDemoLifetime,
		"lifetime of each access token, from 2s to 10s; rounded up to whole seconds, because the exp claim counts seconds")
	fs.IntVar(&opts.lifetimes, "lifetimes", defaultDemoLifetimes,
		"number of token refreshes to wait for, from 1 to 10; the demo runs for about this many lifetimes")
	if err := parseFlags(fs, args, 0, 0); err != nil {
		return err
	}
	opts.lifetime = time.Duration(lifetimeSeconds(opts.lifetime)) * time.Second
	if opts.lifetime < minDemoLifetime || opts.lifetime > maxDemoLifetime {
		return usageErrorf("invalid -lifetime %s: want a duration from %s to %s", opts.lifetime, minDemoLifetime, maxDemoLifetime)
	}
	if opts.lifetimes < 1 || opts.lifetimes > maxDemoLifetimes {
		return usageErrorf("invalid -lifetimes %d: want a number from 1 to %d", opts.lifetimes, maxDemoLifetimes)
	}

	d := newDemo(env.stdout, opts)
	return d.run(ctx)
}

// demo is one run of the demo command.
type demo struct {
	opts    demoOptions
	out     *demoOutput
	secrets *secretSet
	records *recordQueue
	logger  *slog.Logger
	wire    *wireCounter

	srv    *normantest.Server
	mgr    *norman.Manager
	client *http.Client
	apiKey norman.Sensitive[string] // from the signup

	calls      int            // requests made through the demo's clients
	logins     map[string]int // successful logins by reason
	failed     int            // failed logins
	retried    int            // login attempts that failed and were retried
	rejected   int            // 401 responses that made the transport log in again
	unexpected []string       // events that the steps did not expect
}

func newDemo(w io.Writer, opts demoOptions) *demo {
	secrets := &secretSet{}
	records := newRecordQueue()
	return &demo{
		opts:    opts,
		out:     &demoOutput{w: w, json: opts.json, start: time.Now(), secrets: secrets},
		secrets: secrets,
		records: records,
		logger:  slog.New(newRecordHandler(slog.LevelDebug, records.push)),
		logins:  make(map[string]int),
	}
}

func (d *demo) run(ctx context.Context) error {
	d.srv = normantest.NewServer()
	defer d.srv.Close()
	d.srv.SetTokenLifetime(d.opts.lifetime)
	d.wire = &wireCounter{base: d.srv.Client().Transport, secrets: d.secrets, statuses: make(map[int]int)}

	d.out.event("setup", "server_started", fmt.Sprintf(
		"Started a Norman test server at %s. Each access token it issues is valid for %s, and the demo runs until the manager has refreshed the token %s.",
		d.srv.URL, d.opts.lifetime, counted(d.opts.lifetimes, "time", "times")),
		"base_url", d.srv.URL, "lifetime_s", d.opts.lifetime.Seconds(), "lifetimes", d.opts.lifetimes)

	steps := []struct {
		name, title string
		run         func(context.Context) error
	}{
		{"signup", "Sign up", d.signup},
		{"first_login", "First login", d.firstLogin},
		{"refresh", "Requests across " + counted(d.opts.lifetimes, "token lifetime", "token lifetimes"), d.refreshes},
		{"revoked_token", "Revoked token", d.revokedToken},
		{"rejected_key", "Rejected API key", d.rejectedKey},
		{"verified", "Verified tokens", d.verifiedTokens},
	}
	for i, step := range steps {
		d.out.heading(i+1, step.name, step.title)
		if err := step.run(ctx); err != nil {
			return fmt.Errorf("step %d (%s): %w", i+1, strings.ToLower(step.title), err)
		}
	}
	d.out.heading(len(steps)+1, "summary", "Summary")
	d.summary()

	if d.out.err != nil {
		return d.out.err
	}
	if len(d.unexpected) > 0 {
		return fmt.Errorf("%d unexpected events: %s", len(d.unexpected), strings.Join(d.unexpected, "; "))
	}
	return nil
}

// signup creates the demo's account with norman.SignupAndGenerateKey.
func (d *demo) signup(ctx context.Context) error {
	resp, err := norman.SignupAndGenerateKey(ctx, "demo",
		norman.WithBaseURL(d.srv.URL),
		norman.WithHTTPClient(d.srv.Client()),
		norman.WithLogger(d.logger),
	)
	if err != nil {
		return err
	}
	d.secrets.add(resp.APIKey.Value())
	d.apiKey = resp.APIKey

	acct := resp.Account
	d.out.event("signup", "signed_up", fmt.Sprintf(
		"Signed up account %q with ID %s, created %s. Its API key prints as %s.",
		acct.Name, acct.ID, acct.CreationTime.UTC().Format(time.DateTime+" MST"), resp.APIKey),
		"account_id", acct.ID, "name", acct.Name, "creation_time", acct.CreationTime, "api_key", resp.APIKey)
	d.handleQueued("signup")

	d.mgr = norman.NewManager(
		norman.WithBaseURL(d.srv.URL),
		norman.WithAPIKey(resp.APIKey.Value()),
		norman.WithHTTPClient(d.srv.Client()),
		norman.WithLogger(d.logger),
	)
	d.client = &http.Client{Transport: norman.NewTransport(d.mgr, d.wire)}
	return nil
}

// firstLogin logs in before the first request, so that the output shows
// the first login apart from the requests.
func (d *demo) firstLogin(ctx context.Context) error {
	if err := d.mgr.InvalidateAccessToken(ctx); err != nil {
		return err
	}
	if _, err := d.awaitRecord(ctx, "first_login", msgLoggedIn); err != nil {
		return err
	}
	d.out.event("first_login", "manager", fmt.Sprintf("The manager prints as %v.", d.mgr))
	return nil
}

// refreshes sends requests until the manager has refreshed the token
// d.opts.lifetimes times, reporting each refresh as its record arrives.
func (d *demo) refreshes(ctx context.Context) error {
	interval := d.opts.lifetime / 20
	limit := time.Duration(d.opts.lifetimes+2) * d.opts.lifetime
	deadline := time.Now().Add(limit)
	d.out.event("refresh", "start", fmt.Sprintf(
		"Sending POST authenticate/accounts/get every %s through an http.Client whose Transport is a norman.Transport.", interval),
		"interval_s", interval.Seconds())

	refreshes, succeeded := 0, 0
	for refreshes < d.opts.lifetimes {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d token refreshes happened within %s", refreshes, d.opts.lifetimes, limit)
		}
		if err := d.callAccounts(ctx, d.client); err != nil {
			return fmt.Errorf("request %d: %w", d.calls, err)
		}
		succeeded++

		for _, rec := range d.records.drain() {
			if rec.Message == msgLoggedIn {
				d.out.event("refresh", "requests", fmt.Sprintf(
					"Sent %s with the previous token, and the server returned 200 OK for each.", counted(succeeded, "request", "requests")),
					"requests", succeeded)
				succeeded = 0
				refreshes++
			}
			d.handle("refresh", rec)
		}
		if err := sleep(ctx, interval); err != nil {
			return err
		}
	}
	return nil
}

// revokedToken revokes every token on the server, so that the next request
// receives 401, and checks that the transport logs in once and resends it.
func (d *demo) revokedToken(ctx context.Context) error {
	logins, requests := d.srv.Logins(), d.srv.Requests()
	d.srv.RevokeTokens()
	d.out.event("revoked_token", "revoked",
		"Revoked every token the server has issued, including the manager's token, which has not expired yet.")

	if err := d.callAccounts(ctx, d.client); err != nil {
		return fmt.Errorf("the request after the revocation failed: %w", err)
	}
	rec, err := d.awaitRecord(ctx, "revoked_token", msgLoggedIn)
	if err != nil {
		return err
	}
	if reason := rec.text("reason"); reason != "token rejected" {
		d.unexpect("the login after the revocation has reason %q, want %q", reason, "token rejected")
	}

	logins, requests = d.srv.Logins()-logins, d.srv.Requests()-requests
	d.out.event("revoked_token", "resent", fmt.Sprintf(
		"The transport resent the request with the new token, and the server returned 200 OK. For this one call the server received %s and %s.",
		counted(requests, "request", "requests"), counted(logins, "login", "logins")),
		"status", http.StatusOK, "server_requests", requests, "server_logins", logins)
	if logins != 1 || requests != 2 {
		d.unexpect("the revoked token cost %d logins and %d requests, want 1 login and 2 requests", logins, requests)
	}
	return nil
}

// rejectedKey shows a manager whose API key the server rejects: the first
// request fails with an error that matches norman.ErrUnauthorized, and the
// next one fails at once without another login.
func (d *demo) rejectedKey(ctx context.Context) error {
	d.secrets.add(demoWrongKey)
	bad := norman.NewManager(
		norman.WithBaseURL(d.srv.URL),
		norman.WithAPIKey(demoWrongKey),
		norman.WithHTTPClient(d.srv.Client()),
		norman.WithLogger(d.logger),
	)
	badClient := &http.Client{Transport: norman.NewTransport(bad, d.wire)}
	logins := d.srv.Logins()
	d.out.event("rejected_key", "start", "A second manager, whose API key the server does not know, sends a request.")

	err := d.callAccounts(ctx, badClient)
	if err == nil {
		return errors.New("the request with the wrong API key succeeded")
	}
	if !errors.Is(err, norman.ErrUnauthorized) {
		return fmt.Errorf("the request with the wrong API key failed with an error that does not match norman.ErrUnauthorized: %w", err)
	}
	if _, err := d.awaitRecord(ctx, "rejected_key", msgLoginFailed); err != nil {
		return err
	}
	d.out.event("rejected_key", "error", fmt.Sprintf(
		"The request failed, and errors.Is(err, norman.ErrUnauthorized) is true. The error reads: %s", libraryError(err)),
		"error", libraryError(err), "unauthorized", true)

	second := d.callAccounts(ctx, badClient)
	logins = d.srv.Logins() - logins
	if !errors.Is(second, norman.ErrUnauthorized) {
		return fmt.Errorf("the second request with the wrong API key did not fail with norman.ErrUnauthorized: %v", second)
	}
	d.out.event("rejected_key", "no_new_login", fmt.Sprintf(
		"A second request failed at once with the same error. The server received %s for the 2 requests.", counted(logins, "login", "logins")),
		"server_logins", logins, "requests", 2)
	if logins != 1 {
		d.unexpect("the wrong key cost %d logins for 2 requests, want 1", logins)
	}
	return nil
}

// verifiedTokens shows a manager that verifies the tokens of its login
// against the server's JWKS and prints the verified claims of the ID token.
func (d *demo) verifiedTokens(ctx context.Context) error {
	verified := norman.NewManager(
		norman.WithBaseURL(d.srv.URL),
		norman.WithAPIKey(d.apiKey.Value()),
		norman.WithHTTPClient(d.srv.Client()),
		norman.WithJWKS(d.srv.JWKSURL()),
		norman.WithLogger(d.logger),
	)
	defer verified.Close()
	jwksRequests := d.srv.JWKSRequests()
	d.out.event("verified", "start", fmt.Sprintf(
		"A third manager, created with norman.WithJWKS(%q), logs in and verifies the access and ID tokens against the server's JSON Web Key Set.",
		d.srv.JWKSURL()), "jwks_url", d.srv.JWKSURL())

	if err := verified.InvalidateAccessToken(ctx); err != nil {
		return err
	}
	if _, err := d.awaitRecord(ctx, "verified", msgLoggedIn); err != nil {
		return err
	}
	claims, err := verified.IDTokenClaims()
	if err != nil {
		return err
	}
	jwksRequests = d.srv.JWKSRequests() - jwksRequests
	d.out.event("verified", "claims", fmt.Sprintf(
		"Both tokens passed the checks of signature, key ID, algorithm, expiry and audience. The verified ID token names subject %s, issuer %s and audience %s, and expires at %s. The server received %s.",
		claims.Subject, claims.Issuer, strings.Join(claims.Audience, ", "), claims.ExpiresAt.UTC().Format(time.TimeOnly+" MST"),
		counted(jwksRequests, "JWKS request", "JWKS requests")),
		"subject", claims.Subject, "issuer", claims.Issuer, "audience", claims.Audience, "name", claims.Name,
		"expires_at", claims.ExpiresAt, "jwks_requests", jwksRequests)
	if claims.Subject != d.mgr.AccountID() {
		d.unexpect("the verified ID token names subject %s, want the demo's account %s", claims.Subject, d.mgr.AccountID())
	}
	if jwksRequests != 1 {
		d.unexpect("the verified login cost %d JWKS requests, want 1", jwksRequests)
	}
	return nil
}

// summary reports the counts of the whole run and checks that the server's
// counters agree with the managers' records.
func (d *demo) summary() {
	d.handleQueued("summary")

	statuses, sendErrors := d.wire.counts()
	sent := 0
	for _, n := range statuses {
		sent += n
	}
	notSent := d.calls + statuses[http.StatusUnauthorized] - sent - sendErrors

	d.out.event("summary", "requests", fmt.Sprintf(
		"Requests: %d went through the demo's clients, and %d reached the server. The server returned 200 OK for %d and 401 Unauthorized for %d, which the transport resent with a new token. %s never sent, because the API key was rejected.",
		d.calls, sent, statuses[http.StatusOK], statuses[http.StatusUnauthorized],
		counted(notSent, "request was", "requests were")),
		"requests", d.calls, "sent", sent, "status_200", statuses[http.StatusOK], "status_401", statuses[http.StatusUnauthorized],
		"not_sent", notSent, "server_requests", d.srv.Requests())

	successful := 0
	for _, n := range d.logins {
		successful += n
	}
	refreshes := d.logins["token about to expire"] + d.logins["token expired"]
	d.out.event("summary", "logins", fmt.Sprintf(
		"Logins: the server received %s. The managers logged %s: %s, %s and %s after the revoked token. %s, for the wrong key.",
		counted(d.srv.Logins(), "login request", "login requests"), counted(successful, "successful login", "successful logins"),
		counted(d.logins["no token"], "first login", "first logins"), counted(refreshes, "refresh", "refreshes"),
		counted(d.logins["token rejected"], "login", "logins"), counted(d.failed, "login failed", "logins failed")),
		"server_logins", d.srv.Logins(), "logins", successful, "first_logins", d.logins["no token"], "refreshes", refreshes,
		"relogins", d.logins["token rejected"], "failed_logins", d.failed, "retried_logins", d.retried, "server_signups", d.srv.Signups())

	if got, want := d.srv.Logins(), successful+d.failed+d.retried; got != want {
		d.unexpect("the server received %d logins, but the managers logged %d", got, want)
	}
	if got := d.srv.Requests(); got != sent {
		d.unexpect("the server received %d authenticated requests, but the demo sent %d", got, sent)
	}
	if refreshes < d.opts.lifetimes {
		d.unexpect("%d refreshes, want at least %d", refreshes, d.opts.lifetimes)
	}

	elapsed := time.Since(d.out.start)
	d.out.event("summary", "finished", fmt.Sprintf(
		"Unexpected events: %d. Finished in %s. No line of this output contains the API key, the wrong key or an access token.",
		len(d.unexpected), roundDuration(elapsed)),
		"unexpected", len(d.unexpected), "elapsed_total_s", elapsed.Round(time.Millisecond).Seconds())
}

// callAccounts sends POST authenticate/accounts/get through client and
// checks that the server returned the manager's account.
func (d *demo) callAccounts(ctx context.Context, client *http.Client) error {
	d.calls++
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.srv.URL+"/authenticate/accounts/get", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")

	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the server returned %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}

	var accounts map[string]json.RawMessage
	if err := json.Unmarshal(body, &accounts); err != nil {
		return fmt.Errorf("invalid response body: %w", err)
	}
	if _, ok := accounts[d.mgr.AccountID()]; !ok {
		return fmt.Errorf("the response does not contain account %s", d.mgr.AccountID())
	}
	return nil
}

// awaitRecord handles records as they arrive until one with message msg,
// which it returns. A failed login ends the wait with its error, unless
// msg is the failure that the step expects.
func (d *demo) awaitRecord(ctx context.Context, step, msg string) (logRecord, error) {
	timer := time.NewTimer(demoRecordWait)
	defer timer.Stop()
	for {
		for _, rec := range d.records.drain() {
			d.handle(step, rec)
			switch {
			case rec.Message == msg:
				return rec, nil
			case rec.Message == msgLoginFailed:
				return rec, fmt.Errorf("login failed: %s", rec.text("error"))
			}
		}
		select {
		case <-d.records.notify:
		case <-timer.C:
			return logRecord{}, fmt.Errorf("the norman package logged no %q record within %s", msg, demoRecordWait)
		case <-ctx.Done():
			return logRecord{}, ctx.Err()
		}
	}
}

// handleQueued handles the records that have arrived so far.
func (d *demo) handleQueued(step string) {
	for _, rec := range d.records.drain() {
		d.handle(step, rec)
	}
}

// handle prints one record of the norman package as a demo event and
// counts it.
func (d *demo) handle(step string, rec logRecord) {
	switch rec.Message {
	case msgLoggedIn:
		reason := rec.text("reason")
		d.logins[reason]++
		d.out.event(step, loginEvent(reason), loginSentence(reason, rec.text("account_id"))+" "+expirySentence(rec),
			"reason", reason, "account_id", rec.text("account_id"),
			"expires_at", rec.time("expires_at"), "expires_in_s", rec.duration("expires_in").Seconds())

	case msgLoginFailed:
		d.failed++
		d.out.event(step, "login_failed", fmt.Sprintf(
			"The login failed (reason: %s), and the manager makes no new login for %s.",
			rec.text("reason"), roundDuration(rec.duration("retry_in"))),
			"reason", rec.text("reason"), "error", rec.text("error"), "retry_in_s", rec.duration("retry_in").Seconds())
		if step != "rejected_key" {
			d.unexpect("a login failed: %s", rec.text("error"))
		}

	case msgLoginRetry:
		d.retried++
		d.out.event(step, "login_retry", "A login attempt failed, and the manager retries it: "+formatRecord(rec),
			"attempt", rec.value("attempt").Any(), "status", rec.value("status").Any(), "error", rec.text("error"))
		d.unexpect("a login attempt failed: %s", formatRecord(rec))

	case msgTokenRejected:
		d.rejected++
		d.out.event(step, "token_rejected", fmt.Sprintf(
			"The server returned 401 Unauthorized for %s %s, so the transport logs in again.", rec.text("method"), rec.text("url")),
			"method", rec.text("method"), "url", rec.text("url"), "account_id", rec.text("account_id"))
		if step != "revoked_token" {
			d.unexpect("the server rejected a token in step %q", step)
		}

	case msgSignedUp:
		// The signup step prints the account from the response.

	default:
		d.out.event(step, "log", "The norman package logged: "+formatRecord(rec), "level", rec.Level.String())
		if rec.Level >= slog.LevelWarn {
			d.unexpect("%s", formatRecord(rec))
		}
	}
}

func (d *demo) unexpect(format string, args ...any) {
	d.unexpected = append(d.unexpected, fmt.Sprintf(format, args...))
}

func loginEvent(reason string) string {
	switch reason {
	case "no token":
		return "login"
	case "token rejected":
		return "relogin"
	}
	return "refresh"
}

// loginSentence describes a login by the reason the norman package gives.
func loginSentence(reason, accountID string) string {
	switch reason {
	case "no token":
		return fmt.Sprintf("Logged in as account %s (reason: %s).", accountID, reason)
	case "token about to expire":
		return fmt.Sprintf("Refreshed the token in the background while requests kept using the old one (reason: %s).", reason)
	case "token expired":
		return fmt.Sprintf("Logged in again before sending a request (reason: %s).", reason)
	case "token rejected":
		return fmt.Sprintf("Logged in again (reason: %s).", reason)
	}
	return fmt.Sprintf("Logged in (reason: %s).", reason)
}

func expirySentence(rec logRecord) string {
	expiresAt := rec.time("expires_at")
	if expiresAt.IsZero() {
		return fmt.Sprintf("The token has no readable expiry, so it is used for %s.", roundDuration(rec.duration("expires_in")))
	}
	return fmt.Sprintf("The access token expires at %s, in %s.",
		expiresAt.UTC().Format(time.TimeOnly+" MST"), roundDuration(rec.duration("expires_in")))
}

// libraryError returns the norman package's error inside the *url.Error
// that http.Client.Do returns.
func libraryError(err error) string {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err.Error()
	}
	return err.Error()
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recordQueue collects the records of the norman package's logger, which
// arrive on the package's login goroutines, for the demo to handle in
// order on its own goroutine.
type recordQueue struct {
	mu      sync.Mutex
	records []logRecord
	notify  chan struct{} // receives a value when records arrive
}

func newRecordQueue() *recordQueue {
	return &recordQueue{notify: make(chan struct{}, 1)}
}

func (q *recordQueue) push(rec logRecord) {
	q.mu.Lock()
	q.records = append(q.records, rec)
	q.mu.Unlock()
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *recordQueue) drain() []logRecord {
	q.mu.Lock()
	defer q.mu.Unlock()
	records := q.records
	q.records = nil
	return records
}

// secretSet is the set of secrets that the demo must not print.
type secretSet struct {
	mu     sync.Mutex
	values map[string]bool
}

func (s *secretSet) add(secret string) {
	if secret == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.values[secret] {
		return
	}
	if s.values == nil {
		s.values = make(map[string]bool)
	}
	s.values[secret] = true
	if demoSecretSeen != nil {
		demoSecretSeen(secret)
	}
}

// containsIn reports whether text contains any secret of the set.
func (s *secretSet) containsIn(text string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for secret := range s.values {
		if strings.Contains(text, secret) {
			return true
		}
	}
	return false
}

// wireCounter is the http.RoundTripper under the demo's norman.Transport.
// It counts the requests that reach the server by response status, and adds
// each access token sent to the demo's secrets.
type wireCounter struct {
	base    http.RoundTripper
	secrets *secretSet

	mu       sync.Mutex
	statuses map[int]int
	errors   int
}

func (c *wireCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	if token, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
		c.secrets.add(token)
	}
	resp, err := c.base.RoundTrip(req)

	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		c.errors++
	} else {
		c.statuses[resp.StatusCode]++
	}
	return resp, err
}

func (c *wireCounter) counts() (statuses map[int]int, errors int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	statuses = make(map[int]int, len(c.statuses))
	for status, n := range c.statuses {
		statuses[status] = n
	}
	return statuses, c.errors
}

// demoOutput prints the demo's events as sentences or as JSON lines, and
// withholds any line that contains a secret.
type demoOutput struct {
	w       io.Writer
	json    bool
	start   time.Time
	secrets *secretSet
	err     error // the first write error or withheld line
}

// heading starts step number n. JSON output gets an event for it.
func (o *demoOutput) heading(n int, step, title string) {
	if o.json {
		o.event(step, "step", title, "number", n)
		return
	}
	o.write(fmt.Sprintf("\n%d. %s\n", n, title))
}

// event prints one event: step and event name it for JSON, msg is the
// sentence, and fields are key and value pairs for JSON only. A
// time.Time value is written in RFC 3339, and a Sensitive as "<redacted>".
func (o *demoOutput) event(step, event, msg string, fields ...any) {
	elapsed := time.Since(o.start)
	if !o.json {
		o.write(fmt.Sprintf("  %+7.2fs  %s\n", elapsed.Seconds(), msg))
		return
	}

	var b strings.Builder
	b.WriteString(`{"elapsed_s":`)
	b.WriteString(fmt.Sprintf("%.3f", elapsed.Seconds()))
	writeJSONField(&b, "step", step)
	writeJSONField(&b, "event", event)
	for i := 0; i+1 < len(fields); i += 2 {
		writeJSONField(&b, fields[i].(string), fields[i+1])
	}
	writeJSONField(&b, "message", msg)
	b.WriteString("}\n")
	o.write(b.String())
}

func writeJSONField(b *strings.Builder, key string, value any) {
	if t, ok := value.(time.Time); ok && t.IsZero() {
		value = nil
	}
	b.WriteString(",")
	b.WriteString(encodeJSON(key))
	b.WriteString(":")
	b.WriteString(encodeJSON(value))
}

// encodeJSON encodes value without escaping <, > and &, so that
// "<redacted>" reads as it is. A value that cannot be encoded becomes the
// string of its fmt form.
func encodeJSON(value any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(value); err != nil {
		buf.Reset()
		_ = enc.Encode(fmt.Sprint(value))
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func (o *demoOutput) write(line string) {
	if o.err != nil {
		return
	}
	if o.secrets.containsIn(line) {
		o.err = errors.New("withheld an output line that contains a secret")
		return
	}
	if _, err := io.WriteString(o.w, line); err != nil {
		o.err = err
	}
}
