package normantest

import (
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// publishedKeys fetches the JWKS of s and returns its key IDs in order and
// its public keys by key ID.
func publishedKeys(t *testing.T, s *Server) (ids []string, keys map[string]*rsa.PublicKey) {
	t.Helper()
	resp := do(t, s, http.MethodGet, "/.well-known/jwks.json", "", "")
	if resp.status != http.StatusOK {
		t.Fatalf("fetching the JWKS: got status %d, want %d", resp.status, http.StatusOK)
	}
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	decode(t, resp.body, &set)

	keys = make(map[string]*rsa.PublicKey)
	for _, jwk := range set.Keys {
		n, errN := base64.RawURLEncoding.DecodeString(jwk["n"])
		e, errE := base64.RawURLEncoding.DecodeString(jwk["e"])
		if errN != nil || errE != nil {
			t.Fatalf("decoding the key %q: %v, %v", jwk["kid"], errN, errE)
		}
		if jwk["kty"] != "RSA" || jwk["alg"] != "RS256" || jwk["use"] != "sig" {
			t.Errorf("key %q: got kty %q, alg %q, use %q, want RSA, RS256, sig", jwk["kid"], jwk["kty"], jwk["alg"], jwk["use"])
		}
		ids = append(ids, jwk["kid"])
		keys[jwk["kid"]] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	return ids, keys
}

// tokenKeyID returns the kid header of token, which it does not verify.
func tokenKeyID(t *testing.T, token string) string {
	t.Helper()
	parsed, _, err := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
	if err != nil {
		t.Fatalf("decoding a token: %v", err)
	}
	kid, _ := parsed.Header["kid"].(string)
	return kid
}

// signatureValid reports whether key verifies the RS256 signature of token.
func signatureValid(token string, key *rsa.PublicKey) bool {
	_, err := jwt.Parse(token, func(*jwt.Token) (any, error) { return key, nil },
		jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation())
	return err == nil
}

// accountsStatus returns the status of the account lookup with token.
func accountsStatus(t *testing.T, s *Server, token string) int {
	t.Helper()
	return do(t, s, http.MethodPost, "/authenticate/accounts/get", "{}", token).status
}

func TestJWKSURLPath(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)

	if want := s.URL + "/.well-known/jwks.json"; s.JWKSURL() != want {
		t.Errorf("got JWKSURL %q, want %q", s.JWKSURL(), want)
	}
}

func TestRotateKey(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")
	before, _ := publishedKeys(t, s)
	if len(before) != 1 {
		t.Fatalf("got %d keys in the JWKS of a new server, want 1", len(before))
	}
	oldToken := login(t, s, "nk-test-alice").AccessToken

	newID := s.RotateKey()

	ids, keys := publishedKeys(t, s)
	if want := []string{newID, before[0]}; !slices.Equal(ids, want) {
		t.Fatalf("got JWKS key IDs %q after RotateKey, want the new and the old key %q", ids, want)
	}
	if keys[newID].Equal(keys[before[0]]) {
		t.Error("the new key has the same modulus as the old one, want a new key")
	}
	newToken := login(t, s, "nk-test-alice").AccessToken
	if got := tokenKeyID(t, newToken); got != newID {
		t.Errorf("got kid %q on a token after RotateKey, want %q", got, newID)
	}
	if !signatureValid(newToken, keys[newID]) {
		t.Error("the published new key does not verify a token issued after RotateKey")
	}
	for name, token := range map[string]string{"old": oldToken, "new": newToken} {
		if got := accountsStatus(t, s, token); got != http.StatusOK {
			t.Errorf("%s token after one rotation: got status %d, want %d", name, got, http.StatusOK)
		}
	}

	// A second rotation drops the first key, and its tokens with it.
	thirdID := s.RotateKey()
	ids, _ = publishedKeys(t, s)
	if want := []string{thirdID, newID}; !slices.Equal(ids, want) {
		t.Errorf("got JWKS key IDs %q after a second RotateKey, want %q", ids, want)
	}
	resp := do(t, s, http.MethodPost, "/authenticate/accounts/get", "{}", oldToken)
	checkNormanError(t, resp, http.StatusUnauthorized)
	if !strings.Contains(string(resp.body), "not issued by this server") {
		t.Errorf("got body %s for a token of a dropped key, want the cause \"not issued by this server\"", resp.body)
	}
	if got := accountsStatus(t, s, newToken); got != http.StatusOK {
		t.Errorf("token of the replaced key after a second rotation: got status %d, want %d", got, http.StatusOK)
	}
}

func TestSignWithUnpublishedKey(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")
	ids, keys := publishedKeys(t, s)

	s.SignWithUnpublishedKey(true)
	forged := login(t, s, "nk-test-alice")

	for name, token := range map[string]string{"access token": forged.AccessToken, "ID token": forged.IDToken} {
		if kid := tokenKeyID(t, token); kid == "" || slices.Contains(ids, kid) {
			t.Errorf("%s: got kid %q, want one that is not in the JWKS %q", name, kid, ids)
		}
		for kid, key := range keys {
			if signatureValid(token, key) {
				t.Errorf("%s: the published key %q verifies it, want an unpublished signing key", name, kid)
			}
		}
	}
	if got := accountsStatus(t, s, forged.AccessToken); got != http.StatusUnauthorized {
		t.Errorf("token of the unpublished key: got status %d, want %d", got, http.StatusUnauthorized)
	}
	if after, _ := publishedKeys(t, s); !slices.Equal(after, ids) {
		t.Errorf("got JWKS key IDs %q after SignWithUnpublishedKey, want them unchanged %q", after, ids)
	}

	s.SignWithUnpublishedKey(false)
	token := login(t, s, "nk-test-alice").AccessToken
	if got := tokenKeyID(t, token); got != ids[0] {
		t.Errorf("got kid %q after SignWithUnpublishedKey(false), want the published %q", got, ids[0])
	}
	if got := accountsStatus(t, s, token); got != http.StatusOK {
		t.Errorf("token after SignWithUnpublishedKey(false): got status %d, want %d", got, http.StatusOK)
	}
}

func TestJWKSRequests(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")
	login(t, s, "nk-test-alice")
	if got := s.JWKSRequests(); got != 0 {
		t.Errorf("got JWKSRequests() = %d after a login, want 0", got)
	}

	publishedKeys(t, s)
	publishedKeys(t, s)

	if got := s.JWKSRequests(); got != 2 {
		t.Errorf("got JWKSRequests() = %d, want 2", got)
	}
}

func TestVerificationKeyUnknownKeyID(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	token := &jwt.Token{Header: map[string]any{"kid": "normantest-unknown"}}

	if _, err := s.verificationKey(token); !errors.Is(err, errUnknownKeyID) {
		t.Errorf("got error %v for an unknown kid, want errUnknownKeyID", err)
	}
}

func TestRotateKeyConcurrentLogins(t *testing.T) {
	t.Parallel()
	s := newTestServer(t)
	s.AddAccount("alice", "nk-test-alice")

	done := make(chan struct{})
	go func() {
		defer close(done)
		s.RotateKey()
	}()
	for range 4 {
		token := login(t, s, "nk-test-alice").AccessToken
		if got := accountsStatus(t, s, token); got != http.StatusOK {
			t.Errorf("token issued during RotateKey: got status %d, want %d", got, http.StatusOK)
		}
	}
	<-done
}
