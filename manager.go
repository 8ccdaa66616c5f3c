package norman

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
)

// Manager logs in to the Norman API with an API key and keeps the access
// token fresh. Create one with [NewManager] and share it: a Manager is safe
// for concurrent use, and however many goroutines need a token at once, it
// makes one login at a time. The zero value is not usable: its methods
// return an error, and a Transport over it fails every request.
//
// A Manager prints, logs and marshals without its API key or tokens.
type Manager struct {
	base           *url.URL      // nil when configErr is set
	origins        []origin      // base URL's origin first, then WithAllowedOrigins
	configErr      error         // invalid base URL, origin or JWKS URL, reported by every call
	httpClient     *http.Client  // for logins; never follows redirects
	verifier       *jwksVerifier // nil when tokens are not verified
	retry          retryPolicy
	forcedInterval time.Duration // minimum time between logins forced by 401s
	logger         *slog.Logger  // nil means slog.Default()
	now            func() time.Time

	state atomic.Pointer[tokenState] // nil before the first login and after SetAPIKey

	mu              sync.Mutex // guards the fields below
	apiKey          Sensitive[string]
	apiKeyErr       error      // the last SetAPIKey value was invalid
	keyGen          uint64     // incremented by SetAPIKey, so late logins with an old key are dropped
	flight          *loginCall // the login in progress, if any
	lastForcedLogin time.Time  // real clock: start of the last login forced by a 401
	failure         *loginFailure
}

// tokenState is the result of one login. It is immutable, so the fast path
// reads it without a lock.
type tokenState struct {
	access    Sensitive[string]
	id        Sensitive[string]
	bearer    Sensitive[[]string] // the Authorization value "Bearer " + access, built once per login and shared by every request
	accountID string

	receivedAt time.Time      // local clock when the login response arrived
	expiresAt  time.Time      // exp on the server's clock; zero if unreadable
	lifetime   time.Duration  // exp minus the receipt time on the server's clock
	staleAt    time.Time      // local clock: a background refresh starts here
	expiredAt  time.Time      // local clock: the token is no longer sent
	idClaims   *IDTokenClaims // nil unless the ID token was verified
}

// leadRefresh moves staleAt earlier when the stale window is shorter than
// twice the time the last login took, so that the background refresh of a
// short-lived token ends before the token expires. It never moves staleAt
// before half the lifetime.
func (st *tokenState) leadRefresh(loginTook time.Duration) {
	lead := min(2*loginTook, st.lifetime/2)
	if earlier := st.receivedAt.Add(st.lifetime - lead); earlier.Before(st.staleAt) {
		st.staleAt = earlier
	}
}

// loginCall is one login that any number of goroutines wait for.
type loginCall struct {
	done   chan struct{}      // closed when state and err are set
	cancel context.CancelFunc // ends the login early, when the API key changes
	keyGen uint64
	forced bool // started after a 401, so the cached token is known to be dead; guarded by Manager.mu
	state  *tokenState
	err    error

	pauseMu    sync.Mutex    // guards the fields below
	nextTry    time.Time     // real clock: end of the current wait between attempts
	pauseStart chan struct{} // closed, and replaced, when a wait between attempts starts
}

// loginFailure pauses logins after one failed.
type loginFailure struct {
	err      error
	failedAt time.Time     // local clock
	backoff  time.Duration // doubles with each failure in a row
	retryAt  time.Time     // local clock: no login starts before this
}

// errZeroManager is returned by a Manager that was not made by NewManager.
var errZeroManager = newConfigError("norman: Manager is not initialized: create it with NewManager")

// errAPIKeyChanged ends a login whose API key was replaced while it ran.
var errAPIKeyChanged = errors.New("norman: API key changed during login")

// NewManager returns a Manager configured by opts. Without [WithBaseURL] and
// [WithAPIKey] it reads $NORMAN_BASE_URL and $NORMAN_API_KEY. It makes no
// network call: the first login happens when a token is first needed, and a
// missing or invalid setting is reported then.
func NewManager(opts ...Option) *Manager {
	o := newOptions(opts)
	m := &Manager{
		logger: o.logger,
		now:    o.now,
	}

	m.base, m.configErr = parseBaseURL(o.baseURL)
	if m.configErr == nil {
		m.origins, m.configErr = parseOrigins(m.base, o.origins)
	}
	m.httpClient = newHTTPClient(o.httpClient)
	jwksURL, err := parseJWKSURL(o.jwksURL)
	switch {
	case err != nil && m.configErr == nil:
		m.configErr = err
	case jwksURL != nil:
		m.verifier = newJWKSVerifier(jwksURL, o, m.httpClient, m.log)
	}
	m.retry = o.retry
	m.forcedInterval = o.forcedInterval
	m.setAPIKeyLocked(o.apiKey)
	return m
}

// SetAPIKey replaces the API key. A different key drops the cached tokens
// and any remembered login failure, so the next request logs in with it.
// Setting the key the manager already has changes nothing. Surrounding
// whitespace is trimmed. A key that still contains a control character is
// stored as invalid, and calls that need a login report it.
func (m *Manager) SetAPIKey(key string) {
	m.mu.Lock()
	if m.apiKeyErr == nil && m.apiKey.Equal(NewSensitive(strings.TrimSpace(key))) {
		m.mu.Unlock()
		return
	}
	m.setAPIKeyLocked(key)
	m.mu.Unlock()

	m.log().Debug("norman: API key changed; cached tokens dropped")
}

func (m *Manager) setAPIKeyLocked(key string) {
	key, err := cleanSecret("API key", key)
	if err != nil {
		err = &configError{msg: err.Error()}
	}
	m.apiKey, m.apiKeyErr = NewSensitive(key), err
	m.keyGen++
	if m.flight != nil {
		// Its result would be dropped: end it, so that its waiters move on
		// to a login with the new key at once.
		m.flight.cancel()
		m.flight = nil
	}
	m.failure = nil
	m.state.Store(nil)
}

// AccessToken returns the access token of the last login, even if it has
// expired since; call [Manager.Token] for one that is valid. Before the first
// login, and after [Manager.SetAPIKey], it returns [ErrNotLoggedIn].
func (m *Manager) AccessToken() (Sensitive[string], error) {
	st := m.state.Load()
	if st == nil {
		return Sensitive[string]{}, ErrNotLoggedIn
	}
	return st.access, nil
}

// IDToken returns the ID token of the last login, which is the zero
// Sensitive if the login response had none. Before the first login it
// returns [ErrNotLoggedIn].
func (m *Manager) IDToken() (Sensitive[string], error) {
	st := m.state.Load()
	if st == nil {
		return Sensitive[string]{}, ErrNotLoggedIn
	}
	return st.id, nil
}

// AccountID returns the account id of the last login, or "" before the
// first login or if the login response had no account.
func (m *Manager) AccountID() string {
	if st := m.state.Load(); st != nil {
		return st.accountID
	}
	return ""
}

// IDTokenClaims returns the claims of the ID token of the last login, which
// passed verification. It returns an error if verification is off (turn it
// on with [WithJWKS]), [ErrNotLoggedIn] before the first login and after
// [Manager.SetAPIKey], and an error if the login returned no ID token. The
// result is a copy that the caller may change.
func (m *Manager) IDTokenClaims() (*IDTokenClaims, error) {
	if m.verifier == nil && m.configErr == nil {
		return nil, errVerificationOff
	}
	st := m.state.Load()
	if st == nil {
		return nil, ErrNotLoggedIn
	}
	if st.idClaims == nil {
		return nil, errors.New("norman: the last login returned no ID token, so there are no ID token claims")
	}
	claims := *st.idClaims
	claims.Audience = slices.Clone(claims.Audience)
	return &claims, nil
}

// Close stops the background work that [WithJWKS] starts at the first
// login: the hourly refresh of the JSON Web Key Set. A refresh in progress
// is canceled, and the refresh goroutine ends soon after Close returns. The
// manager stays usable. It keeps verifying with the keys it has, and it
// fetches the set again, on the calling goroutine, only when a token names
// an unknown kid.
//
// Close also closes the idle connections of the login client, which keep
// goroutines alive until the connections time out. It does not interrupt a
// login in progress. It is safe to call more than once and concurrently
// with other methods. It always returns nil; the result lets a Manager be
// used as an [io.Closer].
func (m *Manager) Close() error {
	if m.verifier != nil {
		m.verifier.close()
	}
	if m.httpClient != nil {
		m.httpClient.CloseIdleConnections()
	}
	return nil
}

// Expiry returns the exp claim of the cached access token, which is an
// instant on the server's clock. It returns the zero time before the first
// login and when the token's exp cannot be read.
func (m *Manager) Expiry() time.Time {
	if st := m.state.Load(); st != nil {
		return st.expiresAt
	}
	return time.Time{}
}

// AccessTokenExpired reports whether the access token is missing or expired,
// that is, within the expiry margin of its exp on the server's clock.
func (m *Manager) AccessTokenExpired() bool {
	st := m.state.Load()
	return st == nil || !m.now().Before(st.expiredAt)
}

// InvalidateAccessToken makes sure a valid access token is cached: it logs
// in and waits if the token is missing or expired, and otherwise returns at
// once. It returns the login's error, or ctx.Err() if ctx ends first.
func (m *Manager) InvalidateAccessToken(ctx context.Context) error {
	_, err := m.validState(ctx)
	return err
}

// Token returns a valid access token, logging in first if the cached one is
// missing or expired. When the token is close to expiry it returns the
// cached token at once and starts one login in the background.
//
// If ctx ends while Token waits, it returns ctx.Err(); the login carries on
// for other callers under its own timeout.
func (m *Manager) Token(ctx context.Context) (Sensitive[string], error) {
	st, err := m.validState(ctx)
	if err != nil {
		return Sensitive[string]{}, err
	}
	return st.access, nil
}

// validState returns a token state that has not expired. The fast path, a
// fresh token, takes no lock.
func (m *Manager) validState(ctx context.Context) (*tokenState, error) {
	if st := m.state.Load(); st != nil && m.now().Before(st.staleAt) {
		return st, nil
	}
	if m.now == nil {
		return nil, errZeroManager
	}
	return m.refreshState(ctx)
}

// refreshState handles a token that is missing, stale or expired: it joins
// the login in progress or starts one, and waits for it unless the cached
// token is still valid.
func (m *Manager) refreshState(ctx context.Context) (*tokenState, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st, call, err := m.joinRefresh()
		if call == nil {
			return st, err
		}
		st, err = call.wait(ctx)
		if !errors.Is(err, errAPIKeyChanged) {
			return st, err
		}
	}
}

// joinRefresh returns the token to use at once, or else the login to wait
// for, which it starts if none is in progress. A stale token that is still
// valid is returned while a login starts in the background.
func (m *Manager) joinRefresh() (*tokenState, *loginCall, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.usableLocked(); err != nil {
		return nil, nil, err
	}
	now := m.now()
	st := m.state.Load()
	valid := st != nil && now.Before(st.expiredAt)
	if valid && now.Before(st.staleAt) {
		return st, nil, nil
	}

	call := m.flight
	if call == nil {
		if f := m.failure; f != nil && now.Before(f.retryAt) {
			if valid {
				return st, nil, nil
			}
			return nil, nil, f.err
		}
		call = m.startLoginLocked(refreshReason(st, valid))
	}
	if valid {
		return st, nil, nil
	}
	return nil, call, nil
}

// refreshAfterUnauthorized returns a token to retry with after the API
// responded 401 to a request that carried sent, and whether it comes from a
// login made or joined for this 401. Concurrent callers for the same token
// share one login, and logins forced by 401s start at least a second apart
// (forcedLoginInterval): a caller inside that interval waits for its end.
// It returns an error when the login fails or ctx ends.
func (m *Manager) refreshAfterUnauthorized(ctx context.Context, sent *tokenState) (*tokenState, bool, error) {
	for {
		m.mu.Lock()
		now := m.now()
		current := m.state.Load()
		if current != sent && current != nil && now.Before(current.expiredAt) {
			m.mu.Unlock()
			return current, false, nil
		}

		call := m.flight
		if call == nil {
			if err := m.usableLocked(); err != nil {
				m.mu.Unlock()
				return nil, false, err
			}
			// A paused background refresh does not hold back this login,
			// because the token it would have refreshed is known to be dead.
			// The backoff after failed logins still applies.
			if f := m.failure; f != nil && now.Before(f.failedAt.Add(f.backoff)) {
				m.mu.Unlock()
				return nil, false, f.err
			}
			// The interval is measured on the real clock: it paces requests,
			// not token lifetimes.
			if wait := m.forcedInterval - time.Since(m.lastForcedLogin); wait > 0 {
				m.mu.Unlock()
				if err := sleep(ctx, wait); err != nil {
					return nil, false, err
				}
				continue
			}
			m.lastForcedLogin = time.Now()
			call = m.startLoginLocked("token rejected")
			call.forced = true
		}
		m.mu.Unlock()

		st, err := call.wait(ctx)
		if errors.Is(err, errAPIKeyChanged) {
			continue
		}
		return st, err == nil, err
	}
}

// sleep waits for d or until ctx ends.
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

// usableLocked reports a configuration error that rules out any login.
func (m *Manager) usableLocked() error {
	switch {
	case m.configErr != nil:
		return m.configErr
	case m.apiKeyErr != nil:
		return m.apiKeyErr
	case m.apiKey.IsZero():
		return ErrNoAPIKey
	}
	return nil
}

func refreshReason(st *tokenState, valid bool) string {
	switch {
	case st == nil:
		return "no token"
	case valid:
		return "token about to expire"
	}
	return "token expired"
}

// startLoginLocked starts a login in its own goroutine and records it as the
// login in progress. The login runs on its own context, not on the
// caller's, so a caller who gives up does not fail the others. Values of one
// caller's context, such as an httptrace.ClientTrace, therefore do not fire
// for a login that serves them all.
func (m *Manager) startLoginLocked(reason string) *loginCall {
	ctx, cancel := context.WithTimeout(context.Background(), loginTimeout)
	call := &loginCall{done: make(chan struct{}), cancel: cancel, keyGen: m.keyGen, pauseStart: make(chan struct{})}
	m.flight = call
	go m.runLogin(ctx, call, m.apiKey, reason)
	return call
}

func (m *Manager) runLogin(ctx context.Context, call *loginCall, key Sensitive[string], reason string) {
	defer call.cancel()

	started := time.Now()
	st, err := m.doLogin(ctx, key, call.announcePause)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		// Keep the caller from mistaking this for the end of its own context.
		err = fmt.Errorf("norman: login timed out after %s: check the base URL and the server", loginTimeout)
	}
	if st != nil {
		st.leadRefresh(time.Since(started))
	}

	m.mu.Lock()
	if m.flight == call {
		m.flight = nil
	}
	var retryIn time.Duration
	switch {
	case call.keyGen != m.keyGen:
		st, err = nil, errAPIKeyChanged
	case err != nil:
		retryIn = m.recordFailureLocked(err, call.forced)
	default:
		m.state.Store(st)
		m.failure = nil
	}
	call.state, call.err = st, err
	m.mu.Unlock()

	// Log before releasing the waiters, so that a caller who returns from
	// Token finds the record already written.
	defer close(call.done)
	switch {
	case errors.Is(err, errAPIKeyChanged):
		m.log().Debug("norman: login result dropped; the API key changed while it ran")
	case err != nil:
		m.log().Warn("norman: login failed", "reason", reason, "error", err, "retry_in", retryIn)
	default:
		m.log().Debug("norman: logged in", "reason", reason, "account_id", st.accountID,
			"expires_in", st.lifetime.Round(time.Millisecond), "expires_at", st.expiresAt)
	}
}

// recordFailureLocked pauses logins after err. While the cached token is
// valid, the pause is refreshPause or until the token expires, whichever is
// sooner. Without a valid token, or when the API has rejected it
// (tokenRejected), the pause starts at failureBackoffMin and doubles with
// each failure in a row. Failed background refreshes do not double it.
func (m *Manager) recordFailureLocked(err error, tokenRejected bool) time.Duration {
	now := m.now()
	st := m.state.Load()
	valid := !tokenRejected && st != nil && now.Before(st.expiredAt)

	backoff := failureBackoffMin
	if m.failure != nil {
		backoff = m.failure.backoff
		if !valid {
			backoff = min(2*backoff, failureBackoffMax)
		}
	}
	retryAt := now.Add(backoff)
	if valid {
		retryAt = now.Add(refreshPause)
		if st.expiredAt.Before(retryAt) {
			retryAt = st.expiredAt
		}
	}
	m.failure = &loginFailure{err: err, failedAt: now, backoff: backoff, retryAt: retryAt}
	return retryAt.Sub(now)
}

// wait returns the login's result, or ctx.Err() if ctx ends first. When
// the login pauses between attempts until after ctx's deadline, as a long
// Retry-After can require, wait returns at once with an error that names
// the time of the next attempt and matches [context.DeadlineExceeded].
func (c *loginCall) wait(ctx context.Context) (*tokenState, error) {
	deadline, hasDeadline := ctx.Deadline()
	for {
		c.pauseMu.Lock()
		nextTry, pauseStart := c.nextTry, c.pauseStart
		c.pauseMu.Unlock()
		if hasDeadline && nextTry.After(deadline) {
			return nil, pauseAfterDeadlineError(nextTry)
		}

		select {
		case <-c.done:
			return c.state, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-pauseStart:
		}
	}
}

// pauseAfterDeadlineError is the error of a caller whose deadline comes
// before the next login attempt at nextTry.
func pauseAfterDeadlineError(nextTry time.Time) error {
	return fmt.Errorf("norman: login pauses until %s before its next attempt, after this call's deadline; try again then: %w",
		nextTry.UTC().Format(time.RFC3339), context.DeadlineExceeded)
}

// announcePause records that the login waits until nextTry before its next
// attempt, and wakes the waiters so that they can compare it with their
// deadlines.
func (c *loginCall) announcePause(nextTry time.Time) {
	c.pauseMu.Lock()
	defer c.pauseMu.Unlock()
	c.nextTry = nextTry
	close(c.pauseStart)
	c.pauseStart = make(chan struct{})
}

func (m *Manager) log() *slog.Logger {
	if m.logger != nil {
		return m.logger
	}
	return slog.Default()
}

// endpoint joins path to the base URL the way the Python SDK's httpx client
// does: "https://host/v0" and "https://host/v0/" both give
// "https://host/v0/path", where url.ResolveReference would drop "v0".
func (m *Manager) endpoint(path string) string {
	return joinURL(m.base, path)
}

func joinURL(base *url.URL, path string) string {
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + "/" + strings.TrimPrefix(path, "/")
	u.RawPath = ""
	return u.String()
}

// parseBaseURL checks a base URL with parseServiceURL.
func parseBaseURL(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, ErrNoBaseURL
	}
	u, err := parseServiceURL("base URL", raw, "https://api.example.com/v0")
	if err != nil {
		return nil, err
	}
	if err := checkSecure(u); err != nil {
		return nil, err
	}
	return u, nil
}

// parseServiceURL checks a URL that the manager sends credentials to or
// trusts keys from: absolute, http or https, and without user info, query
// or fragment. The error names the setting and shows example, a valid URL.
// Plain HTTP is left to checkSecure.
func parseServiceURL(setting, raw, example string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// The parser's message quotes parts of the URL, which may include a
		// password, so it is not passed on.
		return nil, newConfigError("norman: invalid %s: malformed URL: use an absolute URL such as %s", setting, example)
	}
	if u.User != nil {
		return nil, newConfigError("norman: invalid %s %q: user info is not allowed: remove it", setting, redactURL(u))
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, newConfigError("norman: invalid %s %q: want an absolute http or https URL such as %s", setting, redactURL(u), example)
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, newConfigError("norman: invalid %s %q: a query or fragment is not allowed", setting, redactURL(u))
	}
	return u, nil
}

// cleanSecret trims surrounding whitespace from an API key or token and
// rejects one that still contains a control character. The error names the
// field, never the value.
func cleanSecret(field, value string) (string, error) {
	value = strings.TrimSpace(value)
	for _, r := range value {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return "", fmt.Errorf("norman: invalid %s: it contains a control or invisible formatting character; copy the value again without line breaks, escape codes or zero-width characters", field)
		}
	}
	return value, nil
}

// String describes the manager without secrets: base URL, account id and
// token expiry.
func (m *Manager) String() string {
	var b strings.Builder
	b.WriteString("norman.Manager{")
	if m.base != nil {
		fmt.Fprintf(&b, "BaseURL: %q, ", m.base.String())
	}

	m.mu.Lock()
	hasKey := !m.apiKey.IsZero()
	m.mu.Unlock()
	if hasKey {
		b.WriteString("APIKey: " + redacted + ", ")
	} else {
		b.WriteString("APIKey: none, ")
	}

	if st := m.state.Load(); st != nil {
		fmt.Fprintf(&b, "AccountID: %q, AccessToken: %s, ", st.accountID, redacted)
		if st.expiresAt.IsZero() {
			b.WriteString("Expiry: unknown")
		} else {
			b.WriteString("Expiry: " + st.expiresAt.UTC().Format(time.RFC3339))
		}
	} else {
		b.WriteString("AccessToken: none")
	}
	b.WriteString("}")
	return b.String()
}

// GoString returns the same description as String, so that %#v shows no
// secret.
func (m *Manager) GoString() string { return m.String() }

// Format writes the description of String for every verb, quoted for %q.
func (m *Manager) Format(f fmt.State, verb rune) { writeDescription(f, verb, m.String()) }

// writeDescription writes a secret-free description for any fmt verb,
// quoted for %q, so that no verb falls back to printing fields.
func writeDescription(f fmt.State, verb rune, description string) {
	if verb == 'q' {
		description = strconv.Quote(description)
	}
	_, _ = io.WriteString(f, description)
}

// LogValue implements [slog.LogValuer], logging the base URL, account id,
// whether an API key is set, and the token expiry, but no secret.
func (m *Manager) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, 4)
	if m.base != nil {
		attrs = append(attrs, slog.String("base_url", m.base.String()))
	}

	m.mu.Lock()
	attrs = append(attrs, slog.Bool("api_key_set", !m.apiKey.IsZero()))
	m.mu.Unlock()

	if st := m.state.Load(); st != nil {
		attrs = append(attrs, slog.String("account_id", st.accountID))
		if !st.expiresAt.IsZero() {
			attrs = append(attrs, slog.Time("expires_at", st.expiresAt))
		}
	}
	return slog.GroupValue(attrs...)
}
