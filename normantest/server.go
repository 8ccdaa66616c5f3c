package normantest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// basePath is the path of Server.URL. Every endpoint is below it.
const basePath = "/v0"

// defaultTokenLifetime is the token lifetime of a new Server.
const defaultTokenLifetime = time.Hour

// A Server is a Norman authentication server listening on a loopback
// address, for use in tests and examples.
//
// The zero value is not usable, so create a Server with NewServer. A Server
// is safe for concurrent use: its methods may be called while it serves
// requests, and their effects apply to requests that arrive after the call
// returns.
type Server struct {
	URL string // base URL of the API, such as "http://127.0.0.1:port/v0", without a trailing slash

	httpServer *httptest.Server   // listener and HTTP server behind URL
	mux        *http.ServeMux     // endpoints below basePath, including those added by Handle
	ctx        context.Context    // parent of every request context, canceled by Close
	cancel     context.CancelFunc // cancels ctx

	logins   atomic.Int64 // login requests received
	signups  atomic.Int64 // signup requests received
	requests atomic.Int64 // requests that reached the bearer token check
	jwksGets atomic.Int64 // requests for the JWKS

	// mu guards the clock, the token and login settings, the accounts, the
	// API keys, the issued and verified tokens, the signing keys and the test
	// hook below.
	mu            sync.Mutex
	now           func() time.Time         // server clock, never nil
	lifetime      time.Duration            // lifetime of tokens issued from now on
	loginDelay    time.Duration            // time a login waits before the server responds
	failLogins    int                      // number of coming logins that fail
	failStatus    int                      // HTTP status of the failing logins
	keys          map[string]*apiKey       // by API key
	accounts      map[string]*account      // by account ID
	names         map[string]bool          // account names in use
	tokens        map[string]tokenUse      // unrevoked tokens by jti claim
	verified      map[string]verifiedToken // tokens whose signature was verified, by token
	loginWaitHook func(waiting bool)       // nil outside tests; called when a login starts and stops waiting for loginDelay

	signing     signingKey   // signs new tokens, unless unpublished is set
	published   []signingKey // keys in the JWKS: signing, then the key that the last RotateKey replaced
	rotations   int          // RotateKey calls so far
	unpublished *signingKey  // set by SignWithUnpublishedKey(true); signs new tokens instead of signing
}

// NewServer starts and returns a new Server on a loopback address, with no
// accounts and a token lifetime of one hour. The caller must call Close
// when finished with it, to shut it down.
//
// The first call in a process also generates the RSA key that signs the
// tokens of all servers, which takes a noticeable fraction of a second.
func NewServer() *Server {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		mux:      http.NewServeMux(),
		ctx:      ctx,
		cancel:   cancel,
		now:      time.Now,
		lifetime: defaultTokenLifetime,
		keys:     make(map[string]*apiKey),
		accounts: make(map[string]*account),
		names:    make(map[string]bool),
		tokens:   make(map[string]tokenUse),
		verified: make(map[string]verifiedToken),
	}
	s.signing = newSigningKey(pooledRSAKey(0))
	s.published = []signingKey{s.signing}

	s.mux.HandleFunc("POST "+basePath+"/authenticate/login/key", s.handleLogin)
	s.mux.HandleFunc("PUT "+basePath+"/authenticate/signup/key", s.handleSignup)
	s.mux.Handle("POST "+basePath+"/authenticate/accounts/get", s.requireToken(http.HandlerFunc(s.handleAccountsGet)))
	s.mux.HandleFunc("GET "+basePath+"/.well-known/jwks.json", s.handleJWKS)

	s.httpServer = httptest.NewUnstartedServer(http.HandlerFunc(s.serveHTTP))
	s.httpServer.Config.BaseContext = func(net.Listener) context.Context { return ctx }
	s.URL = "http://" + s.httpServer.Listener.Addr().String() + basePath
	s.httpServer.Start()
	return s
}

// Close shuts down the server and blocks until all outstanding requests on
// it have completed. It first cancels the context of every request, so a
// login that waits for its delay gets a status 503 response at once, and a
// handler added by Handle that honors its request context returns. Calling
// Close more than once has no further effect.
func (s *Server) Close() {
	s.cancel()
	s.httpServer.Close()
}

// Client returns an HTTP client configured for requests to the server. Its
// idle connections are closed when the server is closed. It is safe to call
// Client from several goroutines, and every call returns the same client.
func (s *Server) Client() *http.Client {
	return s.httpServer.Client()
}

// JWKSURL returns the URL of the JSON Web Key Set that contains the public
// keys for verifying the tokens of the server: URL followed by
// "/.well-known/jwks.json". The set contains the current signing key and,
// after RotateKey, the key it replaced. Each key is an RSA key with "use"
// "sig", "alg" "RS256" and a "kid" that no other Server uses.
func (s *Server) JWKSURL() string {
	return s.URL + "/.well-known/jwks.json"
}

// RotateKey switches the server to a new RSA signing key with a new key ID,
// which it returns. Tokens issued from then on are signed with the new
// key. The JWKS publishes the new key first and keeps the key that it
// replaced, so that tokens issued before the rotation stay valid until
// they expire, as during a grace period at a real issuer. The next
// RotateKey removes that older key from the JWKS, and the server then
// rejects the tokens it signed as not issued by this server.
//
// Keys are generated once per process and shared by servers under key IDs
// of their own, so the first rotation to reach a new key takes a
// noticeable fraction of a second.
func (s *Server) RotateKey() (keyID string) {
	s.mu.Lock()
	s.rotations++
	n := s.rotations
	s.mu.Unlock()
	key := newSigningKey(pooledRSAKey(n)) // generating a key can take a while, so not under s.mu

	s.mu.Lock()
	defer s.mu.Unlock()
	s.published = []signingKey{key, s.signing}
	s.signing = key
	return key.id
}

// SignWithUnpublishedKey switches the key that signs the tokens of later
// logins. When on is true, it is an RSA key that no Server publishes, under
// a key ID that is in no JWKS. A client that verifies tokens must reject them, and
// the server's own endpoints reject them as not issued by this server.
// When on is false, later tokens are signed with the published signing key
// again.
//
// The first call with true in a process generates the key, which takes a
// noticeable fraction of a second.
func (s *Server) SignWithUnpublishedKey(on bool) {
	var key *signingKey
	if on {
		k := newSigningKey(unpublishedRSAKey())
		key = &k
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unpublished = key
}

// AddAccount creates an account named name that logs in with apiKey and
// returns the account's ID. The account's creation time is read from the
// server clock.
//
// AddAccount panics if name or apiKey is empty, or if another account
// already has the name or the key. Use obviously fake keys such as
// "nk-test-alice".
func (s *Server) AddAccount(name, apiKey string) (accountID string) {
	if name == "" {
		panic("normantest: AddAccount: the account name is empty; pass a name such as \"alice\"")
	}
	if apiKey == "" {
		panic(fmt.Sprintf("normantest: AddAccount: the API key for account %q is empty; pass a fake key that starts with \"nk-test-\"", name))
	}
	now := s.clock()

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[name] {
		panic(fmt.Sprintf("normantest: AddAccount: an account named %q already exists; give each account its own name", name))
	}
	if owner := s.keys[apiKey]; owner != nil {
		panic(fmt.Sprintf("normantest: AddAccount: the API key for account %q is already the key of account %q; give each account its own key", name, owner.account.Name))
	}
	return s.addAccountLocked(name, apiKey, now).ID
}

// SetTokenLifetime sets the time from the iat claim to the exp claim of the
// tokens issued from now on. Because both claims are whole seconds, the
// lifetime written is d rounded up to a whole second, and at least one
// second, so a token from a sub-second lifetime expires within one second of
// its issue. The default is one hour.
//
// SetTokenLifetime panics if d is zero or negative. To test an expired
// token, move the server clock past its expiry with SetClock instead.
func (s *Server) SetTokenLifetime(d time.Duration) {
	if d <= 0 {
		panic(fmt.Sprintf("normantest: SetTokenLifetime: the lifetime %v is not positive; to expire a token, move the clock with SetClock", d))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lifetime = d
}

// SetClock sets the server clock. The clock supplies the iat and exp claims
// of new tokens and the time against which a token's expiry is checked. It
// also supplies the creation time of new accounts, the timestamp of Norman
// error objects and the Date header of every response. A nil now restores
// time.Now.
//
// The server calls now from its request goroutines without holding any
// lock, so now must be safe for concurrent use. The login delay of
// SetLoginDelay is measured in real time, not on this clock.
func (s *Server) SetClock(now func() time.Time) {
	if now == nil {
		now = time.Now
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// FailLogins makes the next n login requests fail with the HTTP status
// status and a Norman error object, whatever their API key. A status 429 or
// 503 response also carries the header "Retry-After: 0". A call replaces
// the count of an earlier call, and n == 0 cancels the failures still to
// come. A login that the client cancels during its delay does not use up a
// failure.
//
// FailLogins panics if n is negative or if status is not from 400 to 599.
func (s *Server) FailLogins(n int, status int) {
	if n < 0 {
		panic(fmt.Sprintf("normantest: FailLogins: the count %d is negative; pass 0 to stop failing logins", n))
	}
	if status < 400 || status > 599 {
		panic(fmt.Sprintf("normantest: FailLogins: the status %d is not an HTTP error status; pass a status from 400 to 599", status))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failLogins = n
	s.failStatus = status
}

// SetLoginDelay makes each login request wait d of real time after its body
// is read and before the server responds. A login whose request context ends
// during the wait, because the client canceled it or the server is closing,
// stops waiting at once. A d of 0, the default, means no delay.
//
// SetLoginDelay panics if d is negative.
func (s *Server) SetLoginDelay(d time.Duration) {
	if d < 0 {
		panic(fmt.Sprintf("normantest: SetLoginDelay: the delay %v is negative; pass 0 for no delay", d))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loginDelay = d
}

// RevokeTokens revokes every access token and ID token the server has issued
// so far. Requests that present one of them are rejected with status 401.
// Tokens issued after the call are valid.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// RevokeAPIKey revokes apiKey, so logins with it are rejected with status
// 401 from now on. Tokens issued before the call stay valid; revoke them
// with RevokeTokens. Revoking a key twice has no further effect.
//
// RevokeAPIKey panics if no account has apiKey.
func (s *Server) RevokeAPIKey(apiKey string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := s.keys[apiKey]
	if key == nil {
		panic("normantest: RevokeAPIKey: no account has this API key; revoke a key passed to AddAccount or returned by signup")
	}
	key.revoked = true
}

// Logins returns the number of login requests the server has received,
// including failed and rejected ones.
func (s *Server) Logins() int {
	return int(s.logins.Load())
}

// Signups returns the number of signup requests the server has received,
// including rejected ones.
func (s *Server) Signups() int {
	return int(s.signups.Load())
}

// JWKSRequests returns the number of requests for the JWKS at JWKSURL that
// the server has received.
func (s *Server) JWKSRequests() int {
	return int(s.jwksGets.Load())
}

// Requests returns the number of requests the server has received at
// endpoints that require a bearer token, including rejected ones. These are
// the account lookup endpoint and the endpoints added by Handle.
func (s *Server) Requests() int {
	return int(s.requests.Load())
}

// Handle registers handler for pattern behind the bearer token check of the
// server. The pattern has the syntax of [http.ServeMux] patterns, an
// optional method followed by a path, but the path is relative to the base
// URL: "POST echo" serves POST requests to URL+"/echo". A request without a
// valid access token is rejected with status 401 before it reaches handler.
// Inside handler, AccountID returns the ID of the caller's account.
//
// The server sets the headers "Content-Type: application/json" and Date
// before it calls handler, which may overwrite them. Handle may be called
// while the server serves requests.
//
// Handle panics if handler is nil, if the pattern has no path, or if
// http.ServeMux rejects the pattern, for example because it conflicts with
// an endpoint of the server.
func (s *Server) Handle(pattern string, handler http.Handler) {
	if handler == nil {
		panic(fmt.Sprintf("normantest: Handle: the handler for pattern %q is nil", pattern))
	}
	method, path, hasMethod := strings.Cut(pattern, " ")
	if !hasMethod {
		method, path = "", method
	}
	path = strings.TrimPrefix(strings.TrimSpace(path), "/")
	if path == "" {
		panic(fmt.Sprintf("normantest: Handle: the pattern %q has no path; pass a path relative to the base URL, such as \"POST echo\"", pattern))
	}
	full := basePath + "/" + path
	if method != "" {
		full = method + " " + full
	}

	defer func() {
		if v := recover(); v != nil {
			panic(fmt.Sprintf("normantest: Handle: cannot register pattern %q: %v", pattern, v))
		}
	}()
	s.mux.Handle(full, s.requireToken(handler))
}

// accountIDKey is the context key under which requireToken stores the ID
// of the authenticated account.
type accountIDKey struct{}

// AccountID returns the ID of the account whose access token authenticated
// r, for use inside a handler registered with Server.Handle. It returns ""
// for any other request.
func AccountID(r *http.Request) string {
	id, _ := r.Context().Value(accountIDKey{}).(string)
	return id
}

// account is the account object of the Norman API.
type account struct {
	ID           string `json:"id"`
	CreationTime string `json:"creation_time"` // formatted by formatTimestamp
	Name         string `json:"name"`
}

// apiKey is the state of one API key.
type apiKey struct {
	account *account // account that the key logs in to
	revoked bool     // set by RevokeAPIKey
}

// addAccountLocked creates an account and its API key. The caller must hold
// s.mu and must have checked that name and key are unused.
func (s *Server) addAccountLocked(name, key string, now time.Time) *account {
	acct := &account{
		ID:           randomHex(16),
		CreationTime: formatTimestamp(now),
		Name:         name,
	}
	s.accounts[acct.ID] = acct
	s.names[name] = true
	s.keys[key] = &apiKey{account: acct}
	return acct
}

// clock returns the current time on the server clock. It calls the clock
// function without holding s.mu, so the clock function may call methods of
// the Server.
func (s *Server) clock() time.Time {
	s.mu.Lock()
	now := s.now
	s.mu.Unlock()
	return now()
}

// formatTimestamp formats t in UTC the way pydantic 2 writes a datetime to
// JSON: microseconds with six digits, left out when they are zero, and "Z"
// for the UTC offset, as in "2026-12-04T19:42:50.123456Z".
func formatTimestamp(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/int(time.Microsecond) == 0 {
		return t.Format("2006-01-02T15:04:05Z")
	}
	return t.Format("2006-01-02T15:04:05.000000Z")
}
