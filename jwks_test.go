package norman

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/norman-ml/norman-go/normantest"
)

// Fake API keys of the verification tests.
const (
	verifyKeyAlice = "nk-test-verify-alice"
	verifyKeyBob   = "nk-test-verify-bob"
)

func verifyQuietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// verifyClock is the real clock plus an offset that a test moves forward,
// for stepping past the manager's login backoff.
type verifyClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *verifyClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *verifyClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}

// startVerifyServer starts a normantest server with an account for
// verifyKeyAlice and returns it with the account ID.
func startVerifyServer(t *testing.T) (*normantest.Server, string) {
	t.Helper()
	srv := normantest.NewServer()
	t.Cleanup(srv.Close)
	return srv, srv.AddAccount("alice", verifyKeyAlice)
}

// newVerifyManager returns a manager that logs in at base with
// verifyKeyAlice through client, verifies against jwksURL, and is closed
// when t ends. opts override those settings.
func newVerifyManager(t *testing.T, base, jwksURL string, client *http.Client, opts ...Option) *Manager {
	t.Helper()
	all := []Option{
		WithBaseURL(base),
		WithAPIKey(verifyKeyAlice),
		WithHTTPClient(client),
		WithJWKS(jwksURL),
		WithLogger(verifyQuietLogger()),
	}
	m := NewManager(append(all, opts...)...)
	t.Cleanup(func() { m.Close() })
	return m
}

// wantTokenInvalid checks that err is a failed verification of the token
// kind ("access token" or "ID token") at check, and that the error text
// quotes none of the tokens.
func wantTokenInvalid(t *testing.T, err error, kind, check string, tokens ...string) {
	t.Helper()
	if !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("got error %v, want one that matches ErrTokenInvalid", err)
	}
	var invalid *tokenInvalidError
	if !errors.As(err, &invalid) {
		t.Fatalf("got error %T, want a *tokenInvalidError in its chain", err)
	}
	if invalid.token != kind {
		t.Errorf("got a failure of the %s, want the %s: %v", invalid.token, kind, err)
	}
	if invalid.check != check {
		t.Errorf("got failed check %q, want %q: %v", invalid.check, check, err)
	}
	if want := fmt.Sprintf("failed verification (%s)", check); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	for _, token := range tokens {
		for _, part := range append(strings.Split(token, "."), token) {
			if len(part) >= 8 && strings.Contains(err.Error(), part) {
				t.Error("the error text contains a token or a segment of one")
			}
		}
	}
}

// wantNoToken checks that m stored no token.
func wantNoToken(t *testing.T, m *Manager) {
	t.Helper()
	if _, err := m.AccessToken(); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("AccessToken after a failed verification: got error %v, want ErrNotLoggedIn", err)
	}
	if _, err := m.IDToken(); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("IDToken after a failed verification: got error %v, want ErrNotLoggedIn", err)
	}
}

func TestVerifyNormantestToken(t *testing.T) {
	t.Parallel()
	srv, accountID := startVerifyServer(t)
	m := newVerifyManager(t, srv.URL, srv.JWKSURL(), srv.Client(), WithIssuer(srv.URL))

	if _, err := m.Token(context.Background()); err != nil {
		t.Fatalf("Token: %v", err)
	}
	if _, err := m.Token(context.Background()); err != nil {
		t.Fatalf("second Token: %v", err)
	}

	if got := srv.JWKSRequests(); got != 1 {
		t.Errorf("got %d JWKS requests for two calls, want 1", got)
	}
	claims, err := m.IDTokenClaims()
	if err != nil {
		t.Fatalf("IDTokenClaims: %v", err)
	}
	if claims.Subject != accountID {
		t.Errorf("got Subject %q, want the account ID %q", claims.Subject, accountID)
	}
	if claims.Issuer != srv.URL {
		t.Errorf("got Issuer %q, want %q", claims.Issuer, srv.URL)
	}
	if !slices.Equal(claims.Audience, []string{"norman:client"}) {
		t.Errorf("got Audience %q, want [norman:client]", claims.Audience)
	}
	if claims.Name != "alice" {
		t.Errorf("got Name %q, want %q", claims.Name, "alice")
	}
	if got := claims.ExpiresAt.Sub(claims.IssuedAt); got != time.Hour {
		t.Errorf("got ExpiresAt - IssuedAt = %v, want the server's token lifetime of 1h", got)
	}
	if !claims.ExpiresAt.Equal(m.Expiry()) {
		t.Errorf("got ID token ExpiresAt %v, want the access token's expiry %v", claims.ExpiresAt, m.Expiry())
	}
}

func TestVerifyIDTokenClaimsIsCopy(t *testing.T) {
	t.Parallel()
	srv, _ := startVerifyServer(t)
	m := newVerifyManager(t, srv.URL, srv.JWKSURL(), srv.Client())
	if err := m.InvalidateAccessToken(context.Background()); err != nil {
		t.Fatal(err)
	}

	first, err := m.IDTokenClaims()
	if err != nil {
		t.Fatal(err)
	}
	first.Audience[0] = "changed"
	first.Subject = "changed"
	second, err := m.IDTokenClaims()
	if err != nil {
		t.Fatal(err)
	}

	if second.Audience[0] != "norman:client" || second.Subject == "changed" {
		t.Errorf("changing a result of IDTokenClaims changed the next result: %+v", second)
	}
}

func TestVerifyIDTokenClaimsErrors(t *testing.T) {
	t.Parallel()
	srv, _ := startVerifyServer(t)

	t.Run("verification off", func(t *testing.T) {
		m := NewManager(WithBaseURL(srv.URL), WithAPIKey(verifyKeyAlice), WithHTTPClient(srv.Client()),
			WithJWKS(""), WithLogger(verifyQuietLogger()))
		if err := m.InvalidateAccessToken(context.Background()); err != nil {
			t.Fatal(err)
		}

		_, err := m.IDTokenClaims()

		if err == nil || !strings.Contains(err.Error(), "WithJWKS") {
			t.Errorf("got error %v, want one that suggests WithJWKS", err)
		}
		if errors.Is(err, ErrNotLoggedIn) {
			t.Errorf("got ErrNotLoggedIn after a login, want the verification error")
		}
	})
	t.Run("before login", func(t *testing.T) {
		m := newVerifyManager(t, srv.URL, srv.JWKSURL(), srv.Client())

		if _, err := m.IDTokenClaims(); !errors.Is(err, ErrNotLoggedIn) {
			t.Errorf("got error %v, want ErrNotLoggedIn", err)
		}
	})
	t.Run("after SetAPIKey", func(t *testing.T) {
		m := newVerifyManager(t, srv.URL, srv.JWKSURL(), srv.Client())
		if err := m.InvalidateAccessToken(context.Background()); err != nil {
			t.Fatal(err)
		}
		m.SetAPIKey("nk-test-verify-other")

		if _, err := m.IDTokenClaims(); !errors.Is(err, ErrNotLoggedIn) {
			t.Errorf("got error %v, want ErrNotLoggedIn", err)
		}
	})
}

func TestVerifyOffMakesNoJWKSRequest(t *testing.T) {
	t.Parallel()
	srv, _ := startVerifyServer(t)
	m := NewManager(WithBaseURL(srv.URL), WithAPIKey(verifyKeyAlice), WithHTTPClient(srv.Client()),
		WithJWKS(""), WithLogger(verifyQuietLogger()))

	if _, err := m.Token(context.Background()); err != nil {
		t.Fatalf("Token: %v", err)
	}

	if got := srv.JWKSRequests(); got != 0 {
		t.Errorf("got %d JWKS requests without verification, want 0", got)
	}
	if got := srv.Logins(); got != 1 {
		t.Errorf("got %d logins, want 1", got)
	}
}

// TestVerifyEnvironment cannot run in parallel, because it sets the
// environment.
func TestVerifyEnvironment(t *testing.T) {
	srv, _ := startVerifyServer(t)

	t.Setenv(EnvJWKSURL, srv.JWKSURL())
	on := NewManager(WithBaseURL(srv.URL), WithAPIKey(verifyKeyAlice), WithHTTPClient(srv.Client()), WithLogger(verifyQuietLogger()))
	t.Cleanup(func() { on.Close() })
	off := NewManager(WithBaseURL(srv.URL), WithAPIKey(verifyKeyAlice), WithHTTPClient(srv.Client()), WithLogger(verifyQuietLogger()),
		WithJWKS(""))

	if err := on.InvalidateAccessToken(context.Background()); err != nil {
		t.Fatalf("login with %s set: %v", EnvJWKSURL, err)
	}
	if _, err := on.IDTokenClaims(); err != nil {
		t.Errorf("IDTokenClaims with %s set: %v", EnvJWKSURL, err)
	}
	if got := srv.JWKSRequests(); got != 1 {
		t.Errorf("got %d JWKS requests with %s set, want 1", got, EnvJWKSURL)
	}

	if err := off.InvalidateAccessToken(context.Background()); err != nil {
		t.Fatalf("login with WithJWKS(\"\"): %v", err)
	}
	if _, err := off.IDTokenClaims(); err == nil {
		t.Errorf("IDTokenClaims with WithJWKS(\"\") returned no error, want verification off")
	}
	if got := srv.JWKSRequests(); got != 1 {
		t.Errorf("got %d JWKS requests after a login with WithJWKS(\"\"), want still 1", got)
	}
}

func TestVerifyAudienceAndIssuer(t *testing.T) {
	t.Parallel()
	srv, _ := startVerifyServer(t)
	tests := []struct {
		name      string
		opts      []Option
		wantCheck string // "" means the login succeeds
	}{
		{"default audience", nil, ""},
		{"empty audience means default", []Option{WithAudience("")}, ""},
		{"matching issuer", []Option{WithIssuer(srv.URL)}, ""},
		{"wrong audience", []Option{WithAudience("norman:admin")}, checkAudience},
		{"wrong issuer", []Option{WithIssuer("https://issuer.invalid/v0")}, checkIssuer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := newVerifyManager(t, srv.URL, srv.JWKSURL(), srv.Client(), tt.opts...)

			_, err := m.Token(context.Background())

			if tt.wantCheck == "" {
				if err != nil {
					t.Fatalf("Token: %v", err)
				}
				return
			}
			wantTokenInvalid(t, err, "access token", tt.wantCheck)
			wantNoToken(t, m)
		})
	}
}

// startLoginProxy starts a login server in front of srv. It passes each
// login to srv, lets edit change the decoded response body and its
// headers, and returns the result. It returns the proxy's base URL.
func startLoginProxy(t *testing.T, srv *normantest.Server, edit func(body map[string]any, header http.Header)) string {
	t.Helper()
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v0/authenticate/login/key" {
			http.NotFound(w, r)
			return
		}
		request, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "reading the request failed", http.StatusBadRequest)
			return
		}
		resp, err := srv.Client().Post(srv.URL+"/authenticate/login/key", "application/json", bytes.NewReader(request))
		if err != nil {
			http.Error(w, "the login behind the proxy failed", http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			http.Error(w, "the login behind the proxy returned invalid JSON", http.StatusBadGateway)
			return
		}

		header := http.Header{"Date": resp.Header.Values("Date")}
		edit(body, header)
		for name, values := range header {
			w.Header()[name] = values
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(proxy.Close)
	return proxy.URL + "/v0"
}

// tamperPayload returns token with the claim name of its payload set to
// value and its header and signature unchanged.
func tamperPayload(token, name string, value any) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", fmt.Errorf("got a token of %d segments, want 3", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("decoding the payload: %w", err)
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		return "", fmt.Errorf("decoding the claims: %w", err)
	}
	claims[name] = value
	if payload, err = json.Marshal(claims); err != nil {
		return "", err
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(payload)
	return strings.Join(parts, "."), nil
}

func TestVerifyTamperedPayload(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		field, kind string
	}{
		{"access_token", "access token"},
		{"id_token", "ID token"},
	} {
		t.Run(tt.field, func(t *testing.T) {
			t.Parallel()
			srv, _ := startVerifyServer(t)
			var (
				mu   sync.Mutex
				sent []string
			)
			base := startLoginProxy(t, srv, func(body map[string]any, _ http.Header) {
				mu.Lock()
				defer mu.Unlock()
				for _, field := range []string{"access_token", "id_token"} {
					sent = append(sent, body[field].(string))
				}
				tampered, err := tamperPayload(body[tt.field].(string), "sub", "someone-else")
				if err != nil {
					t.Errorf("tampering with the %s: %v", tt.kind, err)
					return
				}
				body[tt.field] = tampered
				sent = append(sent, tampered)
			})
			m := newVerifyManager(t, base, srv.JWKSURL(), srv.Client())

			_, err := m.Token(context.Background())

			mu.Lock()
			defer mu.Unlock()
			wantTokenInvalid(t, err, tt.kind, checkSignature, sent...)
			wantNoToken(t, m)
		})
	}
}

func TestVerifyUnpublishedKey(t *testing.T) {
	t.Parallel()
	srv, _ := startVerifyServer(t)
	srv.SignWithUnpublishedKey(true)
	clock := &verifyClock{}
	m := newVerifyManager(t, srv.URL, srv.JWKSURL(), srv.Client(), WithClock(clock.Now))

	_, err := m.Token(context.Background())

	wantTokenInvalid(t, err, "access token", checkUnknownKID)
	wantNoToken(t, m)
	if got := srv.JWKSRequests(); got != 2 {
		t.Errorf("got %d JWKS requests, want 2: the first fetch and one for the unknown kid", got)
	}

	// Within the login backoff, the manager returns the same error without
	// a login.
	if _, again := m.Token(context.Background()); !errors.Is(again, ErrTokenInvalid) {
		t.Errorf("second Token within the backoff: got %v, want the remembered ErrTokenInvalid", again)
	}
	if got := srv.Logins(); got != 1 {
		t.Errorf("got %d logins within the backoff, want 1", got)
	}

	// After the backoff the manager logs in again, but the JWKS is not
	// fetched again within 30 s of the last fetch.
	clock.Advance(2 * failureBackoffMin)
	_, err = m.Token(context.Background())
	wantTokenInvalid(t, err, "access token", checkUnknownKID)
	if got := srv.Logins(); got != 2 {
		t.Errorf("got %d logins after the backoff, want 2", got)
	}
	if got := srv.JWKSRequests(); got != 2 {
		t.Errorf("got %d JWKS requests after a second unknown kid within 30s, want still 2", got)
	}

	// Tokens signed with the published key pass again, without a fetch.
	srv.SignWithUnpublishedKey(false)
	clock.Advance(4 * failureBackoffMin)
	if _, err := m.Token(context.Background()); err != nil {
		t.Fatalf("Token with the published key: %v", err)
	}
	if got := srv.JWKSRequests(); got != 2 {
		t.Errorf("got %d JWKS requests for a known kid, want still 2", got)
	}
}

func TestVerifyKeyRotation(t *testing.T) {
	t.Parallel()
	srv, _ := startVerifyServer(t)
	bobID := srv.AddAccount("bob", verifyKeyBob)
	m := newVerifyManager(t, srv.URL, srv.JWKSURL(), srv.Client())
	if _, err := m.Token(context.Background()); err != nil {
		t.Fatalf("Token before the rotation: %v", err)
	}

	srv.RotateKey()
	m.SetAPIKey(verifyKeyBob) // drops the tokens, so the next call logs in
	if _, err := m.Token(context.Background()); err != nil {
		t.Fatalf("Token after the rotation: %v", err)
	}

	if got := srv.JWKSRequests(); got != 2 {
		t.Errorf("got %d JWKS requests, want 2: the first fetch and one for the new kid", got)
	}
	claims, err := m.IDTokenClaims()
	if err != nil {
		t.Fatalf("IDTokenClaims: %v", err)
	}
	if claims.Subject != bobID {
		t.Errorf("got Subject %q after the rotation, want bob's account ID %q", claims.Subject, bobID)
	}
}

func TestVerifyExpiredToken(t *testing.T) {
	t.Parallel()
	srv, _ := startVerifyServer(t)
	// The Date header puts the server's clock 2 h ahead of the clock that
	// set exp, 1 h after issue, so the token arrives expired.
	base := startLoginProxy(t, srv, func(_ map[string]any, header http.Header) {
		header.Set("Date", time.Now().Add(2*time.Hour).UTC().Format(http.TimeFormat))
	})
	m := newVerifyManager(t, base, srv.JWKSURL(), srv.Client())

	_, err := m.Token(context.Background())

	wantTokenInvalid(t, err, "access token", checkExpired)
	wantNoToken(t, m)
}

func TestVerifySkewedLocalClock(t *testing.T) {
	t.Parallel()
	for _, skew := range []time.Duration{-3 * time.Hour, 3 * time.Hour} {
		t.Run(skew.String(), func(t *testing.T) {
			t.Parallel()
			srv, _ := startVerifyServer(t)
			local := func() time.Time { return time.Now().Add(skew) }
			m := newVerifyManager(t, srv.URL, srv.JWKSURL(), srv.Client(), WithClock(local))

			if _, err := m.Token(context.Background()); err != nil {
				t.Fatalf("Token with the local clock off by %v: %v", skew, err)
			}

			claims, err := m.IDTokenClaims()
			if err != nil {
				t.Fatal(err)
			}
			if until := time.Until(claims.ExpiresAt); until < 50*time.Minute || until > 70*time.Minute {
				t.Errorf("got an ID token that expires in %v on the real clock, want about 1h", until)
			}
		})
	}
}

// failingJWKS is a JWKS endpoint that fails in a chosen way until it is
// healed, and then serves the JWKS of a normantest server.
type failingJWKS struct {
	srv      *normantest.Server
	fail     func(w http.ResponseWriter)
	healed   atomic.Bool
	requests atomic.Int64
}

func (f *failingJWKS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	if !f.healed.Load() {
		f.fail(w)
		return
	}
	resp, err := f.srv.Client().Get(f.srv.JWKSURL())
	if err != nil {
		http.Error(w, "fetching the JWKS behind the test endpoint failed", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", "application/json")
	io.Copy(w, resp.Body)
}

func TestVerifyJWKSUnavailable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		fail  func(w http.ResponseWriter)
		cause string
	}{
		{"server error", func(w http.ResponseWriter) {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}, "503"},
		{"redirect", func(w http.ResponseWriter) {
			w.Header().Set("Location", "/elsewhere")
			w.WriteHeader(http.StatusFound)
		}, "302"},
		{"invalid JSON", func(w http.ResponseWriter) {
			io.WriteString(w, "<html>maintenance</html>")
		}, "decode"},
		{"body too large", func(w http.ResponseWriter) {
			io.WriteString(w, `{"keys": [`+strings.Repeat(" ", int(maxResponseBody))+`]}`)
		}, "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := startVerifyServer(t)
			endpoint := &failingJWKS{srv: srv, fail: tt.fail}
			jwksServer := httptest.NewServer(endpoint)
			t.Cleanup(jwksServer.Close)
			jwksURL := jwksServer.URL + "/jwks.json"
			clock := &verifyClock{}
			m := newVerifyManager(t, srv.URL, jwksURL, srv.Client(), WithClock(clock.Now))

			_, err := m.Token(context.Background())

			if err == nil {
				t.Fatal("Token succeeded without a JWKS")
			}
			if errors.Is(err, ErrTokenInvalid) {
				t.Errorf("got ErrTokenInvalid for an unavailable JWKS, want a fetch error: %v", err)
			}
			for _, want := range []string{"fetching the JWKS from " + jwksURL + " failed", tt.cause} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			wantNoToken(t, m)

			// Within the backoff no login and no fetch happen.
			if _, again := m.Token(context.Background()); again == nil {
				t.Error("second Token within the backoff succeeded")
			}
			if got := srv.Logins(); got != 1 {
				t.Errorf("got %d logins within the backoff, want 1", got)
			}
			if got := endpoint.requests.Load(); got != 1 {
				t.Errorf("got %d JWKS requests within the backoff, want 1", got)
			}

			endpoint.healed.Store(true)
			clock.Advance(2 * failureBackoffMin)
			if _, err := m.Token(context.Background()); err != nil {
				t.Fatalf("Token after the JWKS recovered: %v", err)
			}
			if got := endpoint.requests.Load(); got != 2 {
				t.Errorf("got %d JWKS requests, want 2", got)
			}
		})
	}
}

func TestVerifyJWKSURLConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		url          string
		want         string
		wantInsecure bool
	}{
		{"plain http to a remote host", "http://jwks.invalid/jwks.json", "insecure JWKS URL", true},
		{"user info", "https://user:hunter2secret@jwks.invalid/jwks.json", "user info is not allowed", false},
		{"query", "https://jwks.invalid/jwks.json?token=hunter2secret", "a query or fragment is not allowed", false},
		{"fragment", "https://jwks.invalid/jwks.json#hunter2secret", "a query or fragment is not allowed", false},
		{"relative", "/jwks.json", "want an absolute http or https URL", false},
		{"other scheme", "ftp://jwks.invalid/jwks.json", "want an absolute http or https URL", false},
		{"unparsable", "https://jwks.invalid/%zz", "invalid JWKS URL", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := startVerifyServer(t)
			m := newVerifyManager(t, srv.URL, tt.url, srv.Client())

			_, err := m.Token(context.Background())

			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one that contains %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2secret") {
				t.Error("the error text contains the secret part of the URL")
			}
			if got := errors.Is(err, ErrInsecureURL); got != tt.wantInsecure {
				t.Errorf("errors.Is(err, ErrInsecureURL) = %v, want %v", got, tt.wantInsecure)
			}
			if retry, _ := CheckRetry(context.Background(), nil, err); retry {
				t.Error("CheckRetry retries an invalid JWKS URL")
			}
			if got := srv.Logins(); got != 0 {
				t.Errorf("got %d logins with an invalid JWKS URL, want 0", got)
			}
			if _, err := m.IDTokenClaims(); !errors.Is(err, ErrNotLoggedIn) {
				t.Errorf("IDTokenClaims: got %v, want ErrNotLoggedIn", err)
			}
		})
	}
}

// verifyLab is a login server that returns the tokens that issue makes, a
// JWKS server that publishes an ES256, an EdDSA and a P-384 key, and an
// API endpoint that counts the requests that reach it.
type verifyLab struct {
	ecKey *ecdsa.PrivateKey
	edKey ed25519.PrivateKey
	p384  *ecdsa.PrivateKey // published without "alg", so only the allow-list rejects ES384
	enc   *ecdsa.PrivateKey // published with "use": "enc"

	issue      func(lab *verifyLab) (access, id string)
	loginURL   string // base URL of the login server and the API
	jwksURL    string
	jwksGets   atomic.Int64
	apiHits    atomic.Int64
	mu         sync.Mutex
	issued     []string // every token returned
	httpClient *http.Client
}

// Key IDs of the verifyLab keys.
const (
	labECKeyID   = "lab-es256"
	labEdKeyID   = "lab-eddsa"
	labP384KeyID = "lab-p384"
	labEncKeyID  = "lab-enc"
)

func newVerifyLab(t *testing.T, issue func(lab *verifyLab) (access, id string)) *verifyLab {
	t.Helper()
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	lab := &verifyLab{ecKey: ecKey, edKey: edKey, p384: p384, enc: enc, issue: issue}

	point, err := ecKey.PublicKey.Bytes() // 0x04, then X and Y of 32 bytes each
	if err != nil {
		t.Fatal(err)
	}
	point384, err := p384.PublicKey.Bytes() // 0x04, then X and Y of 48 bytes each
	if err != nil {
		t.Fatal(err)
	}
	pointEnc, err := enc.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, err := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "EC", "crv": "P-256", "x": b64(point[1:33]), "y": b64(point[33:]), "kid": labECKeyID, "alg": "ES256", "use": "sig"},
		{"kty": "OKP", "crv": "Ed25519", "x": b64(edKey.Public().(ed25519.PublicKey)), "kid": labEdKeyID, "alg": "EdDSA", "use": "sig"},
		{"kty": "EC", "crv": "P-384", "x": b64(point384[1:49]), "y": b64(point384[49:]), "kid": labP384KeyID, "use": "sig"},
		{"kty": "EC", "crv": "P-256", "x": b64(pointEnc[1:33]), "y": b64(pointEnc[33:]), "kid": labEncKeyID, "use": "enc"},
	}})
	if err != nil {
		t.Fatal(err)
	}

	jwksServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lab.jwksGets.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(jwks)
	}))
	t.Cleanup(jwksServer.Close)
	lab.jwksURL = jwksServer.URL + "/jwks.json"

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v0/authenticate/login/key", func(w http.ResponseWriter, r *http.Request) {
		access, id := lab.issue(lab)
		lab.mu.Lock()
		lab.issued = append(lab.issued, access, id)
		lab.mu.Unlock()
		body := map[string]any{
			"account":      map[string]string{"id": "acct-lab", "creation_time": "2026-01-02T03:04:05Z", "name": "lab"},
			"access_token": access,
		}
		if id != "" {
			body["id_token"] = id
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(body)
	})
	mux.HandleFunc("/v0/api", func(w http.ResponseWriter, r *http.Request) {
		lab.apiHits.Add(1)
	})
	loginServer := httptest.NewServer(mux)
	t.Cleanup(loginServer.Close)
	lab.loginURL = loginServer.URL + "/v0"
	lab.httpClient = loginServer.Client()
	return lab
}

// labClaims returns valid claims for a verifyLab token.
func labClaims() jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"sub":  "acct-lab",
		"iss":  "https://lab.invalid",
		"aud":  []string{"norman:client", "norman:other"},
		"iat":  now.Unix(),
		"exp":  now.Add(time.Hour).Unix(),
		"name": "lab",
	}
}

// labSign signs claims with method and key, setting kid unless it is "".
// It runs on server goroutines, so it reports a failure with t.Errorf.
func labSign(t *testing.T, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	token := jwt.NewWithClaims(method, claims)
	if kid != "" {
		token.Header["kid"] = kid
	}
	signed, err := token.SignedString(key)
	if err != nil {
		t.Errorf("signing a %s token: %v", method.Alg(), err)
	}
	return signed
}

// issuedTokens returns every token that the lab's login server returned.
func (lab *verifyLab) issuedTokens() []string {
	lab.mu.Lock()
	defer lab.mu.Unlock()
	return slices.Clone(lab.issued)
}

// publicKeyPEM encodes a public key as PEM, the form in which an attacker
// would use it as an HMAC secret.
func publicKeyPEM(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestVerifyAlgorithmsAndClaims(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		issue     func(t *testing.T, lab *verifyLab) (access, id string)
		wantCheck string // "" means the login succeeds
		wantKind  string
	}{
		{name: "ES256", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			return labSign(t, jwt.SigningMethodES256, lab.ecKey, labECKeyID, labClaims()),
				labSign(t, jwt.SigningMethodES256, lab.ecKey, labECKeyID, labClaims())
		}},
		{name: "EdDSA", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			return labSign(t, jwt.SigningMethodEdDSA, lab.edKey, labEdKeyID, labClaims()),
				labSign(t, jwt.SigningMethodEdDSA, lab.edKey, labEdKeyID, labClaims())
		}},
		{name: "no kid", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			return labSign(t, jwt.SigningMethodES256, lab.ecKey, "", labClaims()), ""
		}},
		{name: "alg none", wantCheck: checkAlgorithm, wantKind: "access token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			return labSign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, labECKeyID, labClaims()), ""
		}},
		{name: "HS256 keyed with the public key", wantCheck: checkAlgorithm, wantKind: "access token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			return labSign(t, jwt.SigningMethodHS256, publicKeyPEM(t, &lab.ecKey.PublicKey), labECKeyID, labClaims()), ""
		}},
		{name: "ES384 with a valid signature", wantCheck: checkAlgorithm, wantKind: "access token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			return labSign(t, jwt.SigningMethodES384, lab.p384, labP384KeyID, labClaims()), ""
		}},
		{name: "kid of an encryption key", wantCheck: checkUnknownKID, wantKind: "access token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			return labSign(t, jwt.SigningMethodES256, lab.enc, labEncKeyID, labClaims()), ""
		}},
		{name: "kid of a key for another alg", wantCheck: checkAlgorithm, wantKind: "access token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			return labSign(t, jwt.SigningMethodES256, lab.ecKey, labEdKeyID, labClaims()), ""
		}},
		{name: "signed by a key not in the JWKS", wantCheck: checkSignature, wantKind: "access token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Error(err)
			}
			return labSign(t, jwt.SigningMethodES256, other, labECKeyID, labClaims()), ""
		}},
		{name: "no exp", wantCheck: checkExpired, wantKind: "access token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			claims := labClaims()
			delete(claims, "exp")
			return labSign(t, jwt.SigningMethodES256, lab.ecKey, labECKeyID, claims), ""
		}},
		{name: "nbf in the future", wantCheck: checkNotYetValid, wantKind: "access token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			claims := labClaims()
			claims["nbf"] = time.Now().Add(10 * time.Minute).Unix()
			return labSign(t, jwt.SigningMethodES256, lab.ecKey, labECKeyID, claims), ""
		}},
		{name: "no aud", wantCheck: checkAudience, wantKind: "access token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			claims := labClaims()
			delete(claims, "aud")
			return labSign(t, jwt.SigningMethodES256, lab.ecKey, labECKeyID, claims), ""
		}},
		{name: "not a JWT", wantCheck: checkMalformed, wantKind: "access token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			return "opaque-access-token-value", ""
		}},
		{name: "ID token alg none", wantCheck: checkAlgorithm, wantKind: "ID token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			return labSign(t, jwt.SigningMethodES256, lab.ecKey, labECKeyID, labClaims()),
				labSign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, labECKeyID, labClaims())
		}},
		{name: "ID token expired", wantCheck: checkExpired, wantKind: "ID token", issue: func(t *testing.T, lab *verifyLab) (string, string) {
			claims := labClaims()
			claims["exp"] = time.Now().Add(-time.Minute).Unix()
			return labSign(t, jwt.SigningMethodES256, lab.ecKey, labECKeyID, labClaims()),
				labSign(t, jwt.SigningMethodES256, lab.ecKey, labECKeyID, claims)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lab := newVerifyLab(t, func(lab *verifyLab) (string, string) { return tt.issue(t, lab) })
			m := newVerifyManager(t, lab.loginURL, lab.jwksURL, lab.httpClient)
			client := &http.Client{Transport: NewTransport(m, lab.httpClient.Transport)}

			resp, err := client.Post(lab.loginURL+"/api", "application/json", strings.NewReader("{}"))
			if err == nil {
				resp.Body.Close()
			}

			if tt.wantCheck == "" {
				if err != nil {
					t.Fatalf("request: %v", err)
				}
				if got := lab.apiHits.Load(); got != 1 {
					t.Errorf("got %d API requests, want 1", got)
				}
				return
			}
			wantTokenInvalid(t, err, tt.wantKind, tt.wantCheck, lab.issuedTokens()...)
			wantNoToken(t, m)
			if got := lab.apiHits.Load(); got != 0 {
				t.Errorf("got %d API requests after a failed verification, want 0", got)
			}
			if retry, _ := CheckRetry(context.Background(), nil, err); retry {
				t.Error("CheckRetry retries a token that failed verification")
			}
		})
	}
}

func TestVerifyNoIDToken(t *testing.T) {
	t.Parallel()
	lab := newVerifyLab(t, func(lab *verifyLab) (string, string) {
		return labSign(t, jwt.SigningMethodEdDSA, lab.edKey, labEdKeyID, labClaims()), ""
	})
	m := newVerifyManager(t, lab.loginURL, lab.jwksURL, lab.httpClient)

	if _, err := m.Token(context.Background()); err != nil {
		t.Fatalf("Token: %v", err)
	}
	_, err := m.IDTokenClaims()

	if err == nil || !strings.Contains(err.Error(), "no ID token") {
		t.Errorf("got error %v, want one that says the login returned no ID token", err)
	}
}

// fetchRSAKey fetches the JWKS of srv and returns its first key.
func fetchRSAKey(t *testing.T, srv *normantest.Server) (kid string, key *rsa.PublicKey) {
	t.Helper()
	resp, err := srv.Client().Get(srv.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct{ Kid, N, E string } `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("decoding the JWKS: %v (%d keys)", err, len(set.Keys))
	}
	n, errN := base64.RawURLEncoding.DecodeString(set.Keys[0].N)
	e, errE := base64.RawURLEncoding.DecodeString(set.Keys[0].E)
	if errN != nil || errE != nil {
		t.Fatalf("decoding the RSA key: %v, %v", errN, errE)
	}
	return set.Keys[0].Kid, &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
}

func TestVerifyRejectsForgedRSAAlgorithms(t *testing.T) {
	t.Parallel()
	srv, _ := startVerifyServer(t)
	kid, public := fetchRSAKey(t, srv)
	tests := []struct {
		name   string
		method jwt.SigningMethod
		key    any
	}{
		{"alg none", jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType},
		{"HS256 keyed with the RSA public key", jwt.SigningMethodHS256, publicKeyPEM(t, public)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lab := newVerifyLab(t, func(*verifyLab) (string, string) {
				claims := labClaims()
				claims["iss"] = srv.URL
				return labSign(t, tt.method, tt.key, kid, claims), ""
			})
			m := newVerifyManager(t, lab.loginURL, srv.JWKSURL(), lab.httpClient)

			_, err := m.Token(context.Background())

			wantTokenInvalid(t, err, "access token", checkAlgorithm, lab.issuedTokens()...)
			wantNoToken(t, m)
		})
	}
}

// jwksRefreshGoroutines counts the goroutines that refresh a JWKS in the
// background.
func jwksRefreshGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), "github.com/MicahParks/jwkset.NewStorageFromHTTP.func")
}

// awaitNoJWKSRefresh waits up to 5 s for every JWKS refresh goroutine to
// end, and reports whether they did.
func awaitNoJWKSRefresh() bool {
	deadline := time.Now().Add(5 * time.Second)
	for jwksRefreshGoroutines() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond) // polls for the goroutine to end, as goleak does
	}
	return true
}

// TestVerifyCloseStopsRefresh counts goroutines of the whole process, so it
// does not run in parallel with the other verification tests.
func TestVerifyCloseStopsRefresh(t *testing.T) {
	if !awaitNoJWKSRefresh() {
		t.Fatal("a JWKS refresh goroutine of an earlier test is still running")
	}
	srv, _ := startVerifyServer(t)
	m := newVerifyManager(t, srv.URL, srv.JWKSURL(), srv.Client())
	if got := jwksRefreshGoroutines(); got != 0 {
		t.Errorf("got %d JWKS refresh goroutines before the first login, want 0", got)
	}

	if err := m.InvalidateAccessToken(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := jwksRefreshGoroutines(); got != 1 {
		t.Errorf("got %d JWKS refresh goroutines after the first login, want 1", got)
	}

	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if !awaitNoJWKSRefresh() {
		t.Fatal("the JWKS refresh goroutine still runs 5s after Close")
	}

	// A failed first fetch leaves no refresh goroutine behind, even on a
	// manager that is never closed.
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	unclosed := NewManager(WithBaseURL(srv.URL), WithAPIKey(verifyKeyAlice), WithHTTPClient(srv.Client()),
		WithJWKS(down.URL+"/jwks.json"), WithLogger(verifyQuietLogger()))
	if err := unclosed.InvalidateAccessToken(context.Background()); err == nil {
		t.Fatal("login with a JWKS that answers 503 succeeded")
	}
	if !awaitNoJWKSRefresh() {
		t.Fatal("a JWKS refresh goroutine still runs 5s after a failed first fetch")
	}

	// A closed manager still logs in and verifies, without a goroutine.
	m.SetAPIKey(verifyKeyAlice + "-unknown")
	m.SetAPIKey(verifyKeyAlice)
	if err := m.InvalidateAccessToken(context.Background()); err != nil {
		t.Fatalf("login after Close: %v", err)
	}
	closedFirst := newVerifyManager(t, srv.URL, srv.JWKSURL(), srv.Client())
	closedFirst.Close()
	if err := closedFirst.InvalidateAccessToken(context.Background()); err != nil {
		t.Fatalf("first login of a manager closed before it: %v", err)
	}
	if _, err := closedFirst.IDTokenClaims(); err != nil {
		t.Errorf("IDTokenClaims of a manager closed before its login: %v", err)
	}
	if got := jwksRefreshGoroutines(); got != 0 {
		t.Errorf("got %d JWKS refresh goroutines from closed managers, want 0", got)
	}
}
