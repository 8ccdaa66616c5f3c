package normantest

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testTime is the start time of the fake clocks in these tests.
var testTime = time.Date(2026, 12, 4, 19, 42, 50, 123456000, time.UTC)

// fakeClock is a clock for Server.SetClock that moves only when Advance is
// called.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newTestServer starts a Server that is closed when t ends.
func newTestServer(t *testing.T) *Server {
	t.Helper()
	s := NewServer()
	t.Cleanup(s.Close)
	return s
}

// response is a response read to its end.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request to the path below s.URL, reads the response and checks
// that its Content-Type is JSON. A non-empty token is sent as bearer token.
func do(t *testing.T, s *Server, method, path, body, token string) response {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatalf("creating the %s %s request: %v", method, path, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the response to %s %s: %v", method, path, err)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("%s %s: got Content-Type %q, want %q", method, path, got, "application/json")
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}
}

// login logs in with apiKey and fails the test unless the status is 200.
func login(t *testing.T, s *Server, apiKey string) loginResponse {
	t.Helper()
	resp := do(t, s, http.MethodPost, "/authenticate/login/key", loginBody(apiKey), "")
	if resp.status != http.StatusOK {
		t.Fatalf("login: got status %d, want %d", resp.status, http.StatusOK)
	}
	var body loginResponse
	decode(t, resp.body, &body)
	return body
}

func loginBody(apiKey string) string {
	data, _ := json.Marshal(loginRequest{APIKey: apiKey})
	return string(data)
}

// decode decodes a response body and never prints it, because it may
// contain a token.
func decode(t *testing.T, body []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("decoding the response body as %T: %v", v, err)
	}
}

// checkNormanError checks that resp is a Norman error object with the given
// status and that it contains none of the secrets.
func checkNormanError(t *testing.T, resp response, status int, secrets ...string) {
	t.Helper()
	if resp.status != status {
		t.Errorf("got status %d, want %d", resp.status, status)
	}
	checkNoSecrets(t, resp, secrets...)

	var body normanError
	decode(t, resp.body, &body)
	if body.StatusCode != status {
		t.Errorf("got status_code %d, want %d", body.StatusCode, status)
	}
	if want := http.StatusText(status); body.ErrorType != want {
		t.Errorf("got error_type %q, want %q", body.ErrorType, want)
	}
	if _, err := time.Parse(time.RFC3339Nano, body.Timestamp); err != nil {
		t.Errorf("got timestamp %q, want an ISO 8601 time: %v", body.Timestamp, err)
	}
	if body.Message == "" {
		t.Error("got an empty message, want a message")
	}
	if body.Cause == "" {
		t.Error("got an empty cause, want a cause")
	}
	if len(body.Suggestions) == 0 {
		t.Error("got no suggestions, want at least one")
	}
}

// checkDetail checks that resp is a FastAPI-style error with the given
// status and that it contains none of the secrets.
func checkDetail(t *testing.T, resp response, status int, secrets ...string) {
	t.Helper()
	if resp.status != status {
		t.Errorf("got status %d, want %d", resp.status, status)
	}
	checkNoSecrets(t, resp, secrets...)

	var body validationError
	decode(t, resp.body, &body)
	if body.Detail == "" {
		t.Error("got an empty detail, want a message")
	}
}

func checkNoSecrets(t *testing.T, resp response, secrets ...string) {
	t.Helper()
	for i, secret := range secrets {
		if secret != "" && strings.Contains(string(resp.body), secret) {
			t.Errorf("the response body contains secret number %d of the request", i+1)
		}
	}
}

// fetchPublicKey fetches the JWKS of s and returns its only key.
func fetchPublicKey(t *testing.T, s *Server) (kid string, key *rsa.PublicKey) {
	t.Helper()
	resp, err := s.Client().Get(s.JWKSURL())
	if err != nil {
		t.Fatalf("fetching the JWKS: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("fetching the JWKS: got status %d, want %d", resp.StatusCode, http.StatusOK)
	}

	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatalf("decoding the JWKS: %v", err)
	}
	if len(set.Keys) != 1 {
		t.Fatalf("got %d keys in the JWKS, want 1", len(set.Keys))
	}

	jwk := set.Keys[0]
	for field, want := range map[string]string{"kty": "RSA", "use": "sig", "alg": "RS256"} {
		if jwk[field] != want {
			t.Errorf("got JWK %s %q, want %q", field, jwk[field], want)
		}
	}
	if jwk["kid"] == "" {
		t.Error("got an empty JWK kid, want a key ID")
	}

	n, err := base64.RawURLEncoding.DecodeString(jwk["n"])
	if err != nil {
		t.Fatalf("decoding JWK n as base64url without padding: %v", err)
	}
	e, err := base64.RawURLEncoding.DecodeString(jwk["e"])
	if err != nil {
		t.Fatalf("decoding JWK e as base64url without padding: %v", err)
	}
	key = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	if got := key.N.BitLen(); got != 2048 {
		t.Errorf("got a %d-bit modulus, want 2048 bits", got)
	}
	if key.E != 65537 {
		t.Errorf("got exponent %d, want 65537", key.E)
	}
	return jwk["kid"], key
}

// verifyToken checks the RS256 signature and the standard claims of token
// against the JWKS of s at the time now, and returns its claims.
func verifyToken(t *testing.T, s *Server, token string, now time.Time) jwt.MapClaims {
	t.Helper()
	kid, key := fetchPublicKey(t, s)
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(token *jwt.Token) (any, error) {
		if got := token.Header["kid"]; got != kid {
			return nil, fmt.Errorf("got kid %v, want %q", got, kid)
		}
		return key, nil
	},
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
		jwt.WithAudience("norman:client"),
		jwt.WithIssuer(s.URL),
	)
	if err != nil {
		t.Fatalf("verifying the token: %v", err)
	}
	return claims
}

func TestLoginTokens(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	clock := newFakeClock(testTime)
	s.SetClock(clock.Now)
	accountID := s.AddAccount("alice", "nk-test-alice")

	body := login(t, s, "nk-test-alice")

	if body.Account.ID != accountID {
		t.Errorf("got account id %q, want %q", body.Account.ID, accountID)
	}
	if body.Account.Name != "alice" {
		t.Errorf("got account name %q, want %q", body.Account.Name, "alice")
	}
	if want := "2026-12-04T19:42:50.123456Z"; body.Account.CreationTime != want {
		t.Errorf("got creation_time %q, want %q", body.Account.CreationTime, want)
	}

	tokens := map[string]jwt.MapClaims{
		"access token": verifyToken(t, s, body.AccessToken, clock.Now()),
		"ID token":     verifyToken(t, s, body.IDToken, clock.Now()),
	}
	for kind, claims := range tokens {
		if got := claims["sub"]; got != accountID {
			t.Errorf("%s: got sub %v, want %q", kind, got, accountID)
		}
		if got := claims["aud"]; got != "norman:client" {
			t.Errorf("%s: got aud %v, want the string %q", kind, got, "norman:client")
		}
		if got := claims["iss"]; got != s.URL {
			t.Errorf("%s: got iss %v, want %q", kind, got, s.URL)
		}
		if got, want := claims["iat"], float64(testTime.Unix()); got != want {
			t.Errorf("%s: got iat %v, want %v", kind, got, want)
		}
		if jti, _ := claims["jti"].(string); jti == "" {
			t.Errorf("%s: got jti %v, want a non-empty string", kind, claims["jti"])
		}
	}
	if got := tokens["ID token"]["name"]; got != "alice" {
		t.Errorf("ID token: got name %v, want %q", got, "alice")
	}
	if got, ok := tokens["access token"]["name"]; ok {
		t.Errorf("access token: got name %v, want no name claim", got)
	}
	if tokens["access token"]["jti"] == tokens["ID token"]["jti"] {
		t.Error("the access token and the ID token have the same jti, want different ones")
	}
}

func TestLoginTokenLifetime(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		lifetime time.Duration // 0 keeps the default
		want     float64       // exp - iat in seconds
	}{
		{name: "default", want: 3600},
		{name: "whole seconds", lifetime: 90 * time.Second, want: 90},
		{name: "fraction rounded up", lifetime: 1500 * time.Millisecond, want: 2},
		{name: "sub-second", lifetime: time.Millisecond, want: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)
			clock := newFakeClock(testTime)
			s.SetClock(clock.Now)
			if tt.lifetime != 0 {
				s.SetTokenLifetime(tt.lifetime)
			}
			s.AddAccount("alice", "nk-test-alice")

			body := login(t, s, "nk-test-alice")

			claims := verifyToken(t, s, body.AccessToken, clock.Now())
			exp, _ := claims["exp"].(float64)
			iat, _ := claims["iat"].(float64)
			if got := exp - iat; got != tt.want {
				t.Errorf("got exp-iat %v seconds, want %v", got, tt.want)
			}
		})
	}
}

func TestLoginTokensUnique(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.SetClock(newFakeClock(testTime).Now)
	s.AddAccount("alice", "nk-test-alice")

	first := login(t, s, "nk-test-alice")
	second := login(t, s, "nk-test-alice")

	if first.AccessToken == second.AccessToken {
		t.Error("two logins in the same second returned the same access token, want different ones")
	}
	if first.IDToken == second.IDToken {
		t.Error("two logins in the same second returned the same ID token, want different ones")
	}
}

func TestLoginRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		body   string
		status int
		norman bool // a Norman error object, otherwise a FastAPI detail
	}{
		{name: "unknown key", body: `{"api_key": "nk-test-mallory"}`, status: http.StatusUnauthorized, norman: true},
		{name: "revoked key", body: `{"api_key": "nk-test-revoked"}`, status: http.StatusUnauthorized, norman: true},
		{name: "missing key", body: `{}`, status: http.StatusUnauthorized, norman: true},
		{name: "empty key", body: `{"api_key": ""}`, status: http.StatusUnauthorized, norman: true},
		{name: "null body", body: `null`, status: http.StatusUnauthorized, norman: true},
		{name: "malformed JSON", body: `{"api_key": nk-test-alice}`, status: http.StatusUnprocessableEntity},
		{name: "empty body", body: ``, status: http.StatusUnprocessableEntity},
		{name: "array body", body: `["nk-test-alice"]`, status: http.StatusUnprocessableEntity},
		{name: "key not a string", body: `{"api_key": 42}`, status: http.StatusUnprocessableEntity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)
			s.AddAccount("alice", "nk-test-alice")
			s.AddAccount("revoked", "nk-test-revoked")
			s.RevokeAPIKey("nk-test-revoked")

			resp := do(t, s, http.MethodPost, "/authenticate/login/key", tt.body, "")

			secrets := []string{"nk-test-mallory", "nk-test-revoked", "nk-test-alice"}
			if tt.norman {
				checkNormanError(t, resp, tt.status, secrets...)
			} else {
				checkDetail(t, resp, tt.status, secrets...)
			}
			if got := s.Logins(); got != 1 {
				t.Errorf("got Logins() = %d, want 1", got)
			}
		})
	}
}

func TestRevokeAPIKeyKeepsTokens(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")
	body := login(t, s, "nk-test-alice")

	s.RevokeAPIKey("nk-test-alice")
	s.RevokeAPIKey("nk-test-alice")

	resp := do(t, s, http.MethodPost, "/authenticate/login/key", loginBody("nk-test-alice"), "")
	checkNormanError(t, resp, http.StatusUnauthorized, "nk-test-alice")
	resp = do(t, s, http.MethodPost, "/authenticate/accounts/get", "", body.AccessToken)
	if resp.status != http.StatusOK {
		t.Errorf("accounts/get with a token issued before RevokeAPIKey: got status %d, want %d", resp.status, http.StatusOK)
	}
}

// Logins that run while their key is revoked each get a token or a 401, and
// every later login gets a 401.
func TestRevokeAPIKeyDuringLogins(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")

	loginStatus := func() (int, error) {
		resp, err := s.Client().Post(s.URL+"/authenticate/login/key", "application/json", strings.NewReader(loginBody("nk-test-alice")))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	// Logins run in a loop until the key is rejected, and the key is
	// revoked while they run.
	accepted := make(chan struct{}, 4)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			for range 1000 {
				status, err := loginStatus()
				switch {
				case err != nil:
					errs <- err
					return
				case status == http.StatusUnauthorized:
					errs <- nil
					return
				case status != http.StatusOK:
					errs <- fmt.Errorf("login during RevokeAPIKey: got status %d, want %d or %d", status, http.StatusOK, http.StatusUnauthorized)
					return
				}
				select {
				case accepted <- struct{}{}:
				default:
				}
			}
			errs <- errors.New("1000 logins in a row were accepted; RevokeAPIKey did not take effect")
		}()
	}
	<-accepted
	s.RevokeAPIKey("nk-test-alice")
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestUnmatchedRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		method    string
		path      string
		status    int
		wantAllow string
	}{
		{name: "unknown path", method: http.MethodPost, path: "/authenticate/login/password", status: http.StatusNotFound},
		{name: "wrong method", method: http.MethodGet, path: "/authenticate/login/key", status: http.StatusMethodNotAllowed, wantAllow: "POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)

			resp := do(t, s, tt.method, tt.path, "", "")

			checkDetail(t, resp, tt.status)
			if got := resp.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("got Allow %q, want %q", got, tt.wantAllow)
			}
		})
	}
}

func TestSignupThenLogin(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.SetClock(newFakeClock(testTime).Now)

	resp := do(t, s, http.MethodPut, "/authenticate/signup/key", `{"name": "bob", "device_id": null}`, "")

	if resp.status != http.StatusOK {
		t.Fatalf("signup: got status %d, want %d", resp.status, http.StatusOK)
	}
	var signup signupResponse
	decode(t, resp.body, &signup)
	if !regexp.MustCompile(`^nk-test-[0-9a-f]{32}$`).MatchString(signup.APIKey) {
		t.Errorf("got an api_key of %d characters that does not match nk-test-<32 hex digits>", len(signup.APIKey))
	}
	if signup.Account.Name != "bob" {
		t.Errorf("got account name %q, want %q", signup.Account.Name, "bob")
	}
	if signup.Account.ID == "" {
		t.Error("got an empty account id, want an id")
	}
	if want := "2026-12-04T19:42:50.123456Z"; signup.Account.CreationTime != want {
		t.Errorf("got creation_time %q, want %q", signup.Account.CreationTime, want)
	}

	body := login(t, s, signup.APIKey)

	if body.Account.ID != signup.Account.ID {
		t.Errorf("login: got account id %q, want the signup's %q", body.Account.ID, signup.Account.ID)
	}
	if got := s.Signups(); got != 1 {
		t.Errorf("got Signups() = %d, want 1", got)
	}
}

func TestSignupKeysDiffer(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)

	keys := make(map[string]bool)
	for _, name := range []string{"bob", "carol"} {
		resp := do(t, s, http.MethodPut, "/authenticate/signup/key", `{"name": "`+name+`"}`, "")
		var signup signupResponse
		decode(t, resp.body, &signup)
		keys[signup.APIKey] = true
	}

	if len(keys) != 2 {
		t.Errorf("got %d distinct API keys from two signups, want 2", len(keys))
	}
}

func TestSignupRejected(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		body   string
		status int
		norman bool // a Norman error object, otherwise a FastAPI detail
	}{
		{name: "duplicate name", body: `{"name": "alice", "device_id": null}`, status: http.StatusConflict, norman: true},
		{name: "empty name", body: `{"name": "", "device_id": null}`, status: http.StatusUnprocessableEntity},
		{name: "blank name", body: `{"name": "  "}`, status: http.StatusUnprocessableEntity},
		{name: "missing name", body: `{"device_id": null}`, status: http.StatusUnprocessableEntity},
		{name: "name not a string", body: `{"name": 7}`, status: http.StatusUnprocessableEntity},
		{name: "malformed JSON", body: `{"name": "bob"`, status: http.StatusUnprocessableEntity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)
			s.AddAccount("alice", "nk-test-alice")

			resp := do(t, s, http.MethodPut, "/authenticate/signup/key", tt.body, "")

			if tt.norman {
				checkNormanError(t, resp, tt.status, "nk-test-alice")
			} else {
				checkDetail(t, resp, tt.status, "nk-test-alice")
			}
			if got := s.Signups(); got != 1 {
				t.Errorf("got Signups() = %d, want 1", got)
			}
		})
	}
}

// caseEnv is the state that a case of TestAccountsGet starts from.
type caseEnv struct {
	t      *testing.T
	s      *Server
	clock  *fakeClock
	tokens loginResponse // tokens of a login as alice
}

func TestAccountsGet(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// token returns the bearer token to send, after changing the
		// server and the clock as the case requires. An empty token sends
		// no Authorization header.
		token  func(e caseEnv) string
		status int
	}{
		{
			name:   "valid token",
			token:  func(e caseEnv) string { return e.tokens.AccessToken },
			status: http.StatusOK,
		},
		{
			name: "valid until exp",
			token: func(e caseEnv) string {
				e.clock.Advance(time.Hour - time.Second)
				return e.tokens.AccessToken
			},
			status: http.StatusOK,
		},
		{
			name:   "missing token",
			token:  func(e caseEnv) string { return "" },
			status: http.StatusUnauthorized,
		},
		{
			name:   "malformed token",
			token:  func(e caseEnv) string { return "not-a-jwt" },
			status: http.StatusUnauthorized,
		},
		{
			name: "tampered signature",
			token: func(e caseEnv) string {
				return e.tokens.AccessToken[:strings.LastIndex(e.tokens.AccessToken, ".")+1] + "AAAA"
			},
			status: http.StatusUnauthorized,
		},
		{
			name: "expired token",
			token: func(e caseEnv) string {
				e.clock.Advance(time.Hour)
				return e.tokens.AccessToken
			},
			status: http.StatusUnauthorized,
		},
		{
			name: "revoked token",
			token: func(e caseEnv) string {
				e.s.RevokeTokens()
				return e.tokens.AccessToken
			},
			status: http.StatusUnauthorized,
		},
		{
			name:   "ID token",
			token:  func(e caseEnv) string { return e.tokens.IDToken },
			status: http.StatusUnauthorized,
		},
		{
			name: "token of another server",
			token: func(e caseEnv) string {
				other := newTestServer(e.t)
				other.SetClock(e.clock.Now)
				other.AddAccount("alice", "nk-test-alice")
				return login(e.t, other, "nk-test-alice").AccessToken
			},
			status: http.StatusUnauthorized,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)
			clock := newFakeClock(testTime)
			s.SetClock(clock.Now)
			accountID := s.AddAccount("alice", "nk-test-alice")
			tokens := login(t, s, "nk-test-alice")
			token := tt.token(caseEnv{t: t, s: s, clock: clock, tokens: tokens})

			resp := do(t, s, http.MethodPost, "/authenticate/accounts/get", "", token)

			if got := s.Requests(); got != 1 {
				t.Errorf("got Requests() = %d, want 1", got)
			}
			if tt.status != http.StatusOK {
				checkNormanError(t, resp, tt.status, token, tokens.AccessToken, tokens.IDToken)
				if got, want := resp.header.Get("WWW-Authenticate"), `Bearer error="invalid_token"`; got != want {
					t.Errorf("got WWW-Authenticate %q, want %q", got, want)
				}
				return
			}
			if resp.status != http.StatusOK {
				t.Fatalf("got status %d, want %d", resp.status, http.StatusOK)
			}
			var accounts map[string]account
			decode(t, resp.body, &accounts)
			want := account{ID: accountID, CreationTime: "2026-12-04T19:42:50.123456Z", Name: "alice"}
			if len(accounts) != 1 || accounts[accountID] != want {
				t.Errorf("got accounts %+v, want only %+v", accounts, want)
			}
		})
	}
}

func TestRevokeTokensKeepsNewTokens(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")
	login(t, s, "nk-test-alice")

	s.RevokeTokens()
	body := login(t, s, "nk-test-alice")

	resp := do(t, s, http.MethodPost, "/authenticate/accounts/get", "", body.AccessToken)
	if resp.status != http.StatusOK {
		t.Errorf("got status %d for a token issued after RevokeTokens, want %d", resp.status, http.StatusOK)
	}
}

// A token is verified with RSA once. Later requests with it skip the
// signature check but must still be rejected once it expires or is revoked.
func TestVerifiedTokenCheckedAgain(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	clock := newFakeClock(time.Date(2031, 5, 6, 7, 0, 0, 0, time.UTC))
	s.SetClock(clock.Now)
	s.SetTokenLifetime(time.Minute)
	s.AddAccount("alice", "nk-test-alice")

	first := login(t, s, "nk-test-alice").AccessToken
	second := login(t, s, "nk-test-alice").AccessToken
	for range 3 {
		for _, token := range []string{first, second} {
			if got := accountsStatus(t, s, token); got != http.StatusOK {
				t.Fatalf("got status %d for a valid token, want %d", got, http.StatusOK)
			}
		}
	}
	s.mu.Lock()
	remembered := len(s.verified)
	s.mu.Unlock()
	if remembered != 2 {
		t.Errorf("server remembers %d verified tokens after 6 requests with 2 tokens, want 2", remembered)
	}

	s.RevokeTokens()
	resp := do(t, s, http.MethodPost, "/authenticate/accounts/get", "{}", first)
	checkNormanError(t, resp, http.StatusUnauthorized)
	if !strings.Contains(string(resp.body), "revoked") {
		t.Errorf("got body %s for a revoked token that was verified before, want the cause \"revoked\"", resp.body)
	}

	third := login(t, s, "nk-test-alice").AccessToken
	if got := accountsStatus(t, s, third); got != http.StatusOK {
		t.Fatalf("got status %d for a valid token, want %d", got, http.StatusOK)
	}
	clock.Advance(time.Minute + time.Second)
	resp = do(t, s, http.MethodPost, "/authenticate/accounts/get", "{}", third)
	checkNormanError(t, resp, http.StatusUnauthorized)
	if !strings.Contains(string(resp.body), "expired") {
		t.Errorf("got body %s for an expired token that was verified before, want the cause \"expired\"", resp.body)
	}
}

func TestFailLogins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status         int
		wantRetryAfter string
	}{
		{status: http.StatusServiceUnavailable, wantRetryAfter: "0"},
		{status: http.StatusTooManyRequests, wantRetryAfter: "0"},
		{status: http.StatusInternalServerError, wantRetryAfter: ""},
		{status: http.StatusBadGateway, wantRetryAfter: ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)
			s.AddAccount("alice", "nk-test-alice")

			s.FailLogins(2, tt.status)

			for i := range 2 {
				resp := do(t, s, http.MethodPost, "/authenticate/login/key", loginBody("nk-test-alice"), "")
				checkNormanError(t, resp, tt.status, "nk-test-alice")
				if got := resp.header.Get("Retry-After"); got != tt.wantRetryAfter {
					t.Errorf("login %d: got Retry-After %q, want %q", i+1, got, tt.wantRetryAfter)
				}
			}
			login(t, s, "nk-test-alice")
			if got := s.Logins(); got != 3 {
				t.Errorf("got Logins() = %d, want 3", got)
			}
		})
	}
}

func TestFailLoginsZeroCancels(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")

	s.FailLogins(3, http.StatusServiceUnavailable)
	s.FailLogins(0, http.StatusServiceUnavailable)

	login(t, s, "nk-test-alice")
}

// setLoginWaitHook installs a hook that sends true to the returned channel
// when a login starts to wait for its delay, and false when it stops.
func setLoginWaitHook(s *Server) <-chan bool {
	events := make(chan bool, 2)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loginWaitHook = func(waiting bool) { events <- waiting }
	return events
}

func TestLoginDelay(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")
	const delay = 50 * time.Millisecond
	s.SetLoginDelay(delay)

	start := time.Now()
	login(t, s, "nk-test-alice")

	if elapsed := time.Since(start); elapsed < delay {
		t.Errorf("login took %v, want at least %v", elapsed, delay)
	}
}

func TestLoginDelayCanceledRequest(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")
	s.SetLoginDelay(time.Hour)
	s.FailLogins(1, http.StatusServiceUnavailable)
	events := setLoginWaitHook(s)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/authenticate/login/key", strings.NewReader(loginBody("nk-test-alice")))
	if err != nil {
		t.Fatal(err)
	}
	result := make(chan error, 1)
	go func() {
		resp, err := s.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		result <- err
	}()

	if waiting := <-events; !waiting {
		t.Fatal("the login hook reported the end of a wait before its start")
	}
	cancel()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got error %v, want %v", err, context.Canceled)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client request was still running 10s after it was canceled")
	}
	select {
	case waiting := <-events:
		if waiting {
			t.Error("the login hook reported a second wait, want the end of the first")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the login was still waiting 10s after the client canceled it")
	}

	// The canceled login did not use up the failure.
	s.SetLoginDelay(0)
	resp := do(t, s, http.MethodPost, "/authenticate/login/key", loginBody("nk-test-alice"), "")
	if resp.status != http.StatusServiceUnavailable {
		t.Errorf("login after the canceled one: got status %d, want %d", resp.status, http.StatusServiceUnavailable)
	}
}

func TestCloseDuringLoginDelay(t *testing.T) {
	t.Parallel()
	s := NewServer()
	s.AddAccount("alice", "nk-test-alice")
	s.SetLoginDelay(time.Hour)
	events := setLoginWaitHook(s)

	statuses := make(chan int, 1)
	go func() {
		resp, err := s.Client().Post(s.URL+"/authenticate/login/key", "application/json", strings.NewReader(loginBody("nk-test-alice")))
		if err != nil {
			statuses <- 0
			return
		}
		resp.Body.Close()
		statuses <- resp.StatusCode
	}()
	<-events

	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close was still blocked 10s after it was called during a login delay")
	}
	if got := <-statuses; got != http.StatusServiceUnavailable {
		t.Errorf("got status %d for the waiting login, want %d", got, http.StatusServiceUnavailable)
	}
}

func TestCloseTwice(t *testing.T) {
	t.Parallel()
	s := NewServer()

	s.Close()
	s.Close()
}

func TestHandle(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	accountID := s.AddAccount("alice", "nk-test-alice")
	s.Handle("POST echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"account_id": AccountID(r)})
	}))
	s.Handle("GET /models/{id}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"id": r.PathValue("id")})
	}))
	token := login(t, s, "nk-test-alice").AccessToken

	resp := do(t, s, http.MethodPost, "/echo", "{}", token)
	if resp.status != http.StatusOK {
		t.Fatalf("POST echo: got status %d, want %d", resp.status, http.StatusOK)
	}
	var echo map[string]string
	decode(t, resp.body, &echo)
	if echo["account_id"] != accountID {
		t.Errorf("POST echo: got AccountID %q, want %q", echo["account_id"], accountID)
	}

	resp = do(t, s, http.MethodGet, "/models/m-1", "", token)
	var model map[string]string
	decode(t, resp.body, &model)
	if model["id"] != "m-1" {
		t.Errorf("GET models/m-1: got path value %q, want %q", model["id"], "m-1")
	}

	resp = do(t, s, http.MethodPost, "/echo", "{}", "")
	checkNormanError(t, resp, http.StatusUnauthorized)

	if got := s.Requests(); got != 3 {
		t.Errorf("got Requests() = %d, want 3", got)
	}
}

func TestAccountIDOutsideHandle(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodGet, "/", nil)

	if got := AccountID(r); got != "" {
		t.Errorf("got AccountID %q for a request that was not authenticated, want \"\"", got)
	}
}

// panicMessage calls f and returns the message it panics with, or "" if
// it returns.
func panicMessage(f func()) (message string) {
	defer func() {
		if v := recover(); v != nil {
			message = fmt.Sprint(v)
		}
	}()
	f()
	return ""
}

func TestMisusePanics(t *testing.T) {
	t.Parallel()
	echo := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	tests := []struct {
		name       string
		call       func(s *Server)
		wantPrefix string
	}{
		{"AddAccount empty name", func(s *Server) { s.AddAccount("", "nk-test-bob") }, "normantest: AddAccount:"},
		{"AddAccount empty key", func(s *Server) { s.AddAccount("bob", "") }, "normantest: AddAccount:"},
		{"AddAccount duplicate key", func(s *Server) { s.AddAccount("bob", "nk-test-alice") }, "normantest: AddAccount:"},
		{"AddAccount duplicate name", func(s *Server) { s.AddAccount("alice", "nk-test-bob") }, "normantest: AddAccount:"},
		{"SetTokenLifetime zero", func(s *Server) { s.SetTokenLifetime(0) }, "normantest: SetTokenLifetime:"},
		{"SetTokenLifetime negative", func(s *Server) { s.SetTokenLifetime(-time.Second) }, "normantest: SetTokenLifetime:"},
		{"FailLogins negative count", func(s *Server) { s.FailLogins(-1, http.StatusServiceUnavailable) }, "normantest: FailLogins:"},
		{"FailLogins success status", func(s *Server) { s.FailLogins(1, http.StatusOK) }, "normantest: FailLogins:"},
		{"FailLogins status too large", func(s *Server) { s.FailLogins(1, 600) }, "normantest: FailLogins:"},
		{"SetLoginDelay negative", func(s *Server) { s.SetLoginDelay(-time.Second) }, "normantest: SetLoginDelay:"},
		{"RevokeAPIKey unknown key", func(s *Server) { s.RevokeAPIKey("nk-test-bob") }, "normantest: RevokeAPIKey:"},
		{"Handle nil handler", func(s *Server) { s.Handle("POST echo", nil) }, "normantest: Handle:"},
		{"Handle no path", func(s *Server) { s.Handle("POST ", echo) }, "normantest: Handle:"},
		{"Handle conflict", func(s *Server) { s.Handle("POST authenticate/login/key", echo) }, "normantest: Handle:"},
		{"Handle invalid method", func(s *Server) { s.Handle("P@ST echo", echo) }, "normantest: Handle:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)
			s.AddAccount("alice", "nk-test-alice")

			got := panicMessage(func() { tt.call(s) })

			if !strings.HasPrefix(got, tt.wantPrefix) {
				t.Errorf("got panic message %q, want a message that starts with %q", got, tt.wantPrefix)
			}
			for _, key := range []string{"nk-test-alice", "nk-test-bob"} {
				if strings.Contains(got, key) {
					t.Error("the panic message contains an API key")
				}
			}
		})
	}
}

func TestCounters(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")
	s.Handle("GET ping", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))

	token := login(t, s, "nk-test-alice").AccessToken
	do(t, s, http.MethodPost, "/authenticate/login/key", loginBody("nk-test-mallory"), "")
	do(t, s, http.MethodPut, "/authenticate/signup/key", `{"name": "bob"}`, "")
	do(t, s, http.MethodPost, "/authenticate/accounts/get", "", token)
	do(t, s, http.MethodPost, "/authenticate/accounts/get", "", "")
	do(t, s, http.MethodGet, "/ping", "", token)
	do(t, s, http.MethodGet, "/.well-known/jwks.json", "", "")

	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"Logins", s.Logins(), 2},
		{"Signups", s.Signups(), 1},
		{"Requests", s.Requests(), 3},
	} {
		if c.got != c.want {
			t.Errorf("got %s() = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestDateHeaderFollowsClock(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		method string
		path   string
		body   string
	}{
		{"login", http.MethodPost, "/authenticate/login/key", `{"api_key": "nk-test-alice"}`},
		{"rejected login", http.MethodPost, "/authenticate/login/key", `{"api_key": "nk-test-mallory"}`},
		{"malformed login", http.MethodPost, "/authenticate/login/key", `{`},
		{"rejected token", http.MethodPost, "/authenticate/accounts/get", ``},
		{"JWKS", http.MethodGet, "/.well-known/jwks.json", ``},
		{"handled endpoint", http.MethodGet, "/ping", ``},
		{"unknown path", http.MethodGet, "/unknown", ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t)
			s.AddAccount("alice", "nk-test-alice")
			s.Handle("GET ping", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
			clock := newFakeClock(testTime.Add(-10 * 365 * 24 * time.Hour))
			s.SetClock(clock.Now)
			token := ""
			if tt.name == "handled endpoint" {
				token = login(t, s, "nk-test-alice").AccessToken
			}

			resp := do(t, s, tt.method, tt.path, tt.body, token)

			if got, want := resp.header.Get("Date"), clock.Now().Format(http.TimeFormat); got != want {
				t.Errorf("got Date %q, want %q", got, want)
			}
		})
	}
}

func TestSetClockNilRestoresTime(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.SetClock(newFakeClock(testTime).Now)

	s.SetClock(nil)

	if got := s.clock(); time.Since(got).Abs() > time.Hour {
		t.Errorf("got server time %v after SetClock(nil), want the current time", got)
	}
}

func TestJWKSKeyIDPerServer(t *testing.T) {
	t.Parallel()
	first := newTestServer(t)
	second := newTestServer(t)

	firstKID, _ := fetchPublicKey(t, first)
	secondKID, _ := fetchPublicKey(t, second)

	if firstKID == secondKID {
		t.Errorf("two servers publish the same kid %q, want different ones", firstKID)
	}
}

func TestLoginConcurrent(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")
	const workers, loginsPerWorker = 8, 4

	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			// t.Fatal must not be called here, outside the test goroutine,
			// so this loop does not use the helper do.
			for range loginsPerWorker {
				resp, err := s.Client().Post(s.URL+"/authenticate/login/key", "application/json", strings.NewReader(loginBody("nk-test-alice")))
				if err != nil {
					t.Errorf("login: %v", err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("got status %d, want %d", resp.StatusCode, http.StatusOK)
				}
			}
		})
	}
	wg.Go(func() {
		s.SetTokenLifetime(time.Minute)
		s.SetClock(time.Now)
		s.RevokeTokens()
		s.Logins()
	})
	wg.Wait()

	if got, want := s.Logins(), workers*loginsPerWorker; got != want {
		t.Errorf("got Logins() = %d, want %d", got, want)
	}
}

func TestFormatTimestamp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		time time.Time
		want string
	}{
		{"microseconds", time.Date(2026, 12, 4, 19, 42, 50, 123456000, time.UTC), "2026-12-04T19:42:50.123456Z"},
		{"trailing zero kept", time.Date(2026, 12, 4, 19, 42, 50, 123450000, time.UTC), "2026-12-04T19:42:50.123450Z"},
		{"nanoseconds truncated", time.Date(2026, 12, 4, 19, 42, 50, 123456789, time.UTC), "2026-12-04T19:42:50.123456Z"},
		{"whole second", time.Date(2026, 12, 4, 19, 42, 50, 0, time.UTC), "2026-12-04T19:42:50Z"},
		{"below a microsecond", time.Date(2026, 12, 4, 19, 42, 50, 999, time.UTC), "2026-12-04T19:42:50Z"},
		{"other zone", time.Date(2026, 12, 4, 20, 42, 50, 500000000, time.FixedZone("CET", 3600)), "2026-12-04T19:42:50.500000Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := formatTimestamp(tt.time); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
