package normantest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// audience is the aud claim of every token the server issues.
const audience = "norman:client"

// rsaKeyPool holds the RSA keys that servers sign with. Generating a
// 2048-bit key takes long enough to slow down tests that start many
// servers, so keys are generated on first need and shared by every Server
// in the process. A Server signs with key 0 at first and with key n after
// its n-th RotateKey. Each Server publishes a key under a key ID of its
// own, so a token from one Server is rejected by another.
var rsaKeyPool struct {
	mu   sync.Mutex
	keys []*rsa.PrivateKey
}

// pooledRSAKey returns key n of rsaKeyPool, generating the keys up to it if
// needed.
func pooledRSAKey(n int) *rsa.PrivateKey {
	rsaKeyPool.mu.Lock()
	defer rsaKeyPool.mu.Unlock()
	for len(rsaKeyPool.keys) <= n {
		rsaKeyPool.keys = append(rsaKeyPool.keys, generateRSAKey())
	}
	return rsaKeyPool.keys[n]
}

// unpublishedRSAKey signs the tokens of SignWithUnpublishedKey. It is not
// in rsaKeyPool, so no Server publishes it.
var unpublishedRSAKey = sync.OnceValue(generateRSAKey)

func generateRSAKey() *rsa.PrivateKey {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic("normantest: generating an RSA signing key failed: " + err.Error())
	}
	return key
}

// signingKey is an RSA key and the key ID under which a Server uses it.
type signingKey struct {
	id  string
	key *rsa.PrivateKey
}

func newSigningKey(key *rsa.PrivateKey) signingKey {
	return signingKey{id: newKeyID(), key: key}
}

// tokenUse is the kind of an issued token, access or ID, as recorded in
// Server.tokens.
type tokenUse int

const (
	accessToken tokenUse = iota + 1
	idToken
)

// errUnknownKeyID reports a token whose kid header names no key in the
// JWKS of the verifying server.
var errUnknownKeyID = errors.New("token was not signed with a key of this server")

// randomHex returns n random bytes encoded as 2n hexadecimal characters.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // since Go 1.24, crashes the program instead of returning an error
	return hex.EncodeToString(b)
}

// lifetimeSeconds converts a token lifetime to the whole seconds between the
// iat and exp claims, rounded up and at least 1, because both claims are
// NumericDate values in whole seconds.
func lifetimeSeconds(d time.Duration) int64 {
	seconds := int64(d / time.Second)
	if d%time.Second != 0 {
		seconds++
	}
	return max(seconds, 1)
}

// issueTokens returns a new access token and ID token for acct, records both
// under their jti claims in s.tokens, and panics if signing fails. The RSA
// signing, which takes about a millisecond per token, runs without s.mu, so
// that requests presenting earlier tokens are not held up by a login.
func (s *Server) issueTokens(acct *account) (access, id string) {
	issuedAt := s.clock().Unix()

	s.mu.Lock()
	expiresAt := issuedAt + lifetimeSeconds(s.lifetime)
	key := s.signing
	if s.unpublished != nil {
		key = *s.unpublished
	}
	s.mu.Unlock()

	accessID, idID := randomHex(16), randomHex(16)
	access = sign(key, jwt.MapClaims{
		"iss": s.URL,
		"sub": acct.ID,
		"aud": audience,
		"iat": issuedAt,
		"exp": expiresAt,
		"jti": accessID,
	})
	id = sign(key, jwt.MapClaims{
		"iss":  s.URL,
		"sub":  acct.ID,
		"aud":  audience,
		"iat":  issuedAt,
		"exp":  expiresAt,
		"jti":  idID,
		"name": acct.Name,
	})

	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[accessID] = accessToken
	s.tokens[idID] = idToken
	return access, id
}

// sign signs claims with RS256 under key, and panics if signing fails.
func sign(key signingKey, claims jwt.MapClaims) string {
	token := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	token.Header["kid"] = key.id
	signed, err := token.SignedString(key.key)
	if err != nil {
		panic("normantest: signing a token failed: " + err.Error())
	}
	return signed
}

// authenticate checks the bearer token of r and returns the ID of the
// account it was issued to. If the token is missing or rejected, it returns
// "" and the reason, which never contains the token.
func (s *Server) authenticate(r *http.Request) (accountID, reason string) {
	scheme, token, found := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !found || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return "", "The request has no Authorization header with a bearer token."
	}

	now := s.clock()
	claims, err := s.verifiedClaims(token, now)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", "The access token has expired."
	case errors.Is(err, errUnknownKeyID), errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "", "The access token was not issued by this server."
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "", "The access token is not a well-formed JWT."
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "", "The signature of the access token is invalid."
	case err != nil:
		return "", "The access token failed verification."
	}

	s.mu.Lock()
	use := s.tokens[claims.ID]
	s.mu.Unlock()
	switch use {
	case accessToken:
		return claims.Subject, ""
	case idToken:
		return "", "An ID token cannot be used as a bearer token."
	default:
		return "", "The access token has been revoked."
	}
}

// verifiedClaims verifies token at the instant now and returns its claims.
// A token whose signature was verified before is only checked again
// against the published keys and the claim rules, which spares an RSA
// verification on every request.
func (s *Server) verifiedClaims(token string, now time.Time) (*jwt.RegisteredClaims, error) {
	rules := []jwt.ParserOption{
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
		jwt.WithAudience(audience),
		jwt.WithIssuer(s.URL),
	}

	s.mu.Lock()
	known, ok := s.verified[token]
	s.mu.Unlock()
	if ok {
		if _, err := s.publishedKey(known.keyID); err != nil {
			return nil, err
		}
		if err := jwt.NewValidator(rules...).Validate(known.claims); err != nil {
			return nil, err
		}
		return known.claims, nil
	}

	claims := &jwt.RegisteredClaims{}
	parsed, err := jwt.ParseWithClaims(token, claims, s.verificationKey,
		append(rules, jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}))...)
	if err != nil {
		return nil, err
	}
	keyID, _ := parsed.Header["kid"].(string)
	s.mu.Lock()
	if len(s.verified) >= maxVerifiedTokens {
		clear(s.verified)
	}
	s.verified[token] = verifiedToken{claims: claims, keyID: keyID}
	s.mu.Unlock()
	return claims, nil
}

// maxVerifiedTokens bounds the number of tokens whose verification the
// server remembers.
const maxVerifiedTokens = 4096

// verifiedToken is a token whose signature the server has verified.
type verifiedToken struct {
	claims *jwt.RegisteredClaims
	keyID  string // kid header
}

// verificationKey is the jwt.Keyfunc of the server. It accepts only tokens
// whose kid header names a key in the JWKS of this server.
func (s *Server) verificationKey(token *jwt.Token) (any, error) {
	kid, _ := token.Header["kid"].(string)
	key, err := s.publishedKey(kid)
	if err != nil {
		return nil, err
	}
	return key, nil
}

// publishedKey returns the public key that the JWKS of the server lists
// under kid, or errUnknownKeyID.
func (s *Server) publishedKey(kid string) (*rsa.PublicKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.published {
		if k.id == kid {
			return &k.key.PublicKey, nil
		}
	}
	return nil, errUnknownKeyID
}

// jsonWebKey is a public RSA key in the JSON Web Key format of RFC 7517,
// with the RSA parameters of RFC 7518, section 6.3.1.
type jsonWebKey struct {
	KeyType   string `json:"kty"`
	Use       string `json:"use"`
	Algorithm string `json:"alg"`
	KeyID     string `json:"kid"`
	Modulus   string `json:"n"` // base64url without padding, big-endian
	Exponent  string `json:"e"` // base64url without padding, big-endian
}

// jwks returns the JSON Web Key Set that contains the published public keys
// of s, the current signing key first.
func (s *Server) jwks() map[string][]jsonWebKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]jsonWebKey, 0, len(s.published))
	for _, k := range s.published {
		public := k.key.PublicKey
		keys = append(keys, jsonWebKey{
			KeyType:   "RSA",
			Use:       "sig",
			Algorithm: jwt.SigningMethodRS256.Alg(),
			KeyID:     k.id,
			Modulus:   base64.RawURLEncoding.EncodeToString(public.N.Bytes()),
			Exponent:  base64.RawURLEncoding.EncodeToString(big.NewInt(int64(public.E)).Bytes()),
		})
	}
	return map[string][]jsonWebKey{"keys": keys}
}

// newKeyID returns a key ID that is unique to one Server.
func newKeyID() string {
	return fmt.Sprintf("normantest-%s", randomHex(8))
}
