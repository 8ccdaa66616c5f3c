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
	"strings"
	"sync"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Defaults of token verification, which WithJWKS turns on.
const (
	defaultAudience     = "norman:client"
	jwksRefreshInterval = time.Hour        // background refresh of the key set
	jwksRefetchInterval = 30 * time.Second // minimum time between fetches for an unknown kid
	jwksFetchTimeout    = 10 * time.Second // one fetch, and for an unknown kid also the wait for the rate limit before it
	maxClaimText        = 100              // bytes of a claim value or kid quoted in an error
)

// allowedAlgorithms are the JWS algorithms that a verified token may use.
// "none" and the HMAC algorithms are absent: a key set publishes public
// keys, and a verifier that accepted HS256 would take a token whose HMAC
// secret is one of those public keys.
var allowedAlgorithms = []string{
	jwt.SigningMethodRS256.Alg(),
	jwt.SigningMethodES256.Alg(),
	jwt.SigningMethodEdDSA.Alg(),
}

// Names of the verification checks, as a tokenInvalidError reports them.
const (
	checkMalformed   = "malformed"
	checkAlgorithm   = "algorithm"
	checkUnknownKID  = "unknown kid"
	checkSignature   = "signature"
	checkExpired     = "expired"
	checkNotYetValid = "not yet valid"
	checkAudience    = "audience"
	checkIssuer      = "issuer"
	checkClaims      = "claims"
)

// errVerificationOff is returned by IDTokenClaims when tokens are not
// verified.
var errVerificationOff = errors.New("norman: ID token claims are available only from verified tokens: turn on verification with WithJWKS or NORMAN_JWKS_URL")

// IDTokenClaims are the standard claims of the ID token of the last login,
// read after the token passed verification. A zero field means that the
// token lacks the claim.
type IDTokenClaims struct {
	Subject   string    // sub: the account ID
	Issuer    string    // iss
	Audience  []string  // aud, which contains the audience of WithAudience
	IssuedAt  time.Time // iat
	ExpiresAt time.Time // exp, an instant on the server's clock; never zero
	Name      string    // name: the account name
}

// verifiedClaims decodes the claims of an access or ID token.
type verifiedClaims struct {
	jwt.RegisteredClaims
	Name string `json:"name"`
}

// jwksVerifier verifies tokens against a JSON Web Key Set. It fetches the
// set at the first verification, so that a manager that never logs in
// makes no request and starts no goroutine. It is safe for concurrent use.
type jwksVerifier struct {
	url      string       // validated by parseJWKSURL
	client   *http.Client // the login client, with a limit on response bodies
	audience string
	issuer   string // "" means not checked
	log      func() *slog.Logger

	ctx    context.Context    // ends the background refresh
	cancel context.CancelFunc // called by close

	mu         sync.Mutex         // guards the fields below and serializes the first fetch
	keys       keyfunc.Keyfunc    // nil until a fetch has succeeded
	stopKeySet context.CancelFunc // ends the refresh goroutine of keys, as cancel also does
}

func newJWKSVerifier(u *url.URL, o *options, login *http.Client, log func() *slog.Logger) *jwksVerifier {
	audience := strings.TrimSpace(o.audience)
	if audience == "" {
		audience = defaultAudience
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &jwksVerifier{
		url:      u.String(),
		client:   newJWKSClient(login),
		audience: audience,
		issuer:   strings.TrimSpace(o.issuer),
		log:      log,
		ctx:      ctx,
		cancel:   cancel,
	}
}

// parseJWKSURL checks a JWKS URL by the rules of the base URL: absolute,
// http or https, no user info, query or fragment, and plain http only for
// loopback hosts. An empty URL returns nil and no error.
func parseJWKSURL(raw string) (*url.URL, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return nil, nil
	}
	u, err := parseServiceURL("JWKS URL", raw, "https://api.example.com/v0/.well-known/jwks.json")
	if err != nil {
		return nil, err
	}
	if err := checkSecure(u); err != nil {
		return nil, &configError{
			msg: fmt.Sprintf("norman: insecure JWKS URL %q: over plain HTTP anyone on the network could replace the signing keys: use https, or a loopback address for local testing", redactURL(u)),
			err: ErrInsecureURL,
		}
	}
	return u, nil
}

// close ends the background refresh. Keys already fetched stay in use.
func (v *jwksVerifier) close() {
	v.cancel()
}

// keySet returns the key set, fetching it first if no fetch has succeeded.
// After close it fetches the set without starting a refresh goroutine.
func (v *jwksVerifier) keySet() (keyfunc.Keyfunc, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.keys != nil {
		return v.keys, nil
	}

	closed := v.ctx.Err() != nil
	keys, stop, err := v.fetchKeySet(closed)
	if err != nil && !closed && v.ctx.Err() != nil {
		// close canceled this fetch, so fetch once more as a closed verifier.
		keys, stop, err = v.fetchKeySet(true)
	}
	if err != nil {
		return nil, &jwksFetchError{url: v.url, err: err}
	}
	v.keys, v.stopKeySet = keys, stop
	return keys, nil
}

// fetchKeySet fetches the key set and returns it with the function that
// ends its refresh goroutine. With closed set, it starts no such goroutine.
func (v *jwksVerifier) fetchKeySet(closed bool) (keyfunc.Keyfunc, context.CancelFunc, error) {
	ctx, stop := context.WithCancel(v.ctx)
	refreshInterval := jwksRefreshInterval
	if closed {
		ctx, refreshInterval = context.WithoutCancel(v.ctx), 0
	}
	storage, err := jwkset.NewStorageFromHTTP(v.url, jwkset.HTTPClientStorageOptions{
		Client:              v.client,
		Ctx:                 ctx,
		HTTPTimeout:         jwksFetchTimeout,
		RefreshInterval:     refreshInterval,
		RefreshErrorHandler: v.refreshFailed,
	})
	if err != nil {
		// NewStorageFromHTTP starts its refresh goroutine before the first
		// fetch and leaves it running when that fetch fails.
		stop()
		return nil, nil, err
	}
	client, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{v.url: storage},
		RateLimitWaitMax:  jwksFetchTimeout,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(jwksRefetchInterval), 1),
	})
	var keys keyfunc.Keyfunc
	if err == nil {
		// A key published for encryption ("use": "enc") never verifies a
		// signature. Keys without "use" are accepted, as RFC 7517 allows.
		keys, err = keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: client, UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}})
	}
	if err != nil {
		stop()
		return nil, nil, err
	}
	return keys, stop, nil
}

// refreshFailed logs a failed refresh of the key set, in the background or
// for an unknown kid. The keys fetched before stay in use.
func (v *jwksVerifier) refreshFailed(_ context.Context, err error) {
	if errors.Is(err, context.Canceled) && v.ctx.Err() != nil {
		return // close ended a background refresh
	}
	v.log().Warn("norman: refreshing the JWKS failed; keeping the keys fetched before",
		"url", v.url, "error", fetchCause(err))
}

// verify checks the access token and, if not empty, the ID token of a
// login, judging exp and nbf at serverNow, the server's clock when the login
// response arrived. It returns the ID token's claims, or nil when id is
// empty. ctx bounds a fetch of the key set for an unknown kid.
func (v *jwksVerifier) verify(ctx context.Context, access, id string, serverNow time.Time) (*IDTokenClaims, error) {
	keys, err := v.keySet()
	if err != nil {
		return nil, err
	}

	options := []jwt.ParserOption{
		jwt.WithValidMethods(allowedAlgorithms),
		jwt.WithTimeFunc(func() time.Time { return serverNow }),
		jwt.WithExpirationRequired(),
		jwt.WithAudience(v.audience),
		jwt.WithPaddingAllowed(),
	}
	if v.issuer != "" {
		options = append(options, jwt.WithIssuer(v.issuer))
	}
	parser := jwt.NewParser(options...)
	lookup := keys.KeyfuncCtx(ctx)
	keyFunc := func(token *jwt.Token) (any, error) {
		key, err := lookup(token)
		if err != nil {
			return nil, &keyLookupError{err: err}
		}
		return key, nil
	}

	if _, err := v.verifyToken(ctx, parser, keyFunc, keys, "access token", access, serverNow); err != nil {
		return nil, err
	}
	if id == "" {
		return nil, nil
	}
	claims, err := v.verifyToken(ctx, parser, keyFunc, keys, "ID token", id, serverNow)
	if err != nil {
		return nil, err
	}
	return &IDTokenClaims{
		Subject:   claims.Subject,
		Issuer:    claims.Issuer,
		Audience:  slices.Clone([]string(claims.Audience)),
		IssuedAt:  numericDateTime(claims.IssuedAt),
		ExpiresAt: numericDateTime(claims.ExpiresAt),
		Name:      claims.Name,
	}, nil
}

// verifyToken parses and verifies one token. kind names it in errors.
func (v *jwksVerifier) verifyToken(ctx context.Context, parser *jwt.Parser, keyFunc jwt.Keyfunc, keys keyfunc.Keyfunc,
	kind, token string, serverNow time.Time) (*verifiedClaims, error) {
	claims := &verifiedClaims{}
	parsed, err := parser.ParseWithClaims(token, claims, keyFunc)
	if err == nil {
		return claims, nil
	}
	check, detail := v.diagnose(ctx, parsed, claims, keys, err, serverNow)
	return nil, &tokenInvalidError{token: kind, check: check, detail: detail}
}

// diagnose names the check that err failed and describes the failure
// without quoting the token. The claims it quotes come from a token whose
// signature has been verified.
func (v *jwksVerifier) diagnose(ctx context.Context, parsed *jwt.Token, claims *verifiedClaims, keys keyfunc.Keyfunc,
	err error, serverNow time.Time) (check, detail string) {
	if parsed == nil || errors.Is(err, jwt.ErrTokenMalformed) {
		return checkMalformed, "the token is not a well-formed JWT: check that the base URL names a Norman API"
	}

	alg, _ := parsed.Header["alg"].(string)
	if !slices.Contains(allowedAlgorithms, alg) {
		return checkAlgorithm, fmt.Sprintf("alg %q is not allowed: a verified token must use %s",
			clipClaim(alg), strings.Join(allowedAlgorithms, ", "))
	}

	var lookupErr *keyLookupError
	if errors.As(err, &lookupErr) {
		return v.diagnoseLookup(ctx, parsed, keys, lookupErr)
	}
	if errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		kid, _ := parsed.Header["kid"].(string)
		return checkSignature, fmt.Sprintf("the signature does not match the key with kid %q in the JWKS at %s: the token was altered or signed by another key",
			clipClaim(kid), v.url)
	}
	if errors.Is(err, jwt.ErrTokenUnverifiable) {
		return checkUnknownKID, fmt.Sprintf("the token has no kid, and the JWKS at %s has no key for alg %q", v.url, alg)
	}
	if !errors.Is(err, jwt.ErrTokenInvalidClaims) {
		return checkClaims, err.Error()
	}

	timeFormat := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	switch {
	case claims.ExpiresAt == nil:
		return checkExpired, "the token has no exp claim, and a verified token must expire"
	case !serverNow.Before(claims.ExpiresAt.Time):
		return checkExpired, fmt.Sprintf("exp %s is not after the server's time %s: check the server's clock and token lifetime",
			timeFormat(claims.ExpiresAt.Time), timeFormat(serverNow))
	case claims.NotBefore != nil && serverNow.Before(claims.NotBefore.Time):
		return checkNotYetValid, fmt.Sprintf("nbf %s is after the server's time %s: check the server's clock",
			timeFormat(claims.NotBefore.Time), timeFormat(serverNow))
	case !slices.Contains(claims.Audience, v.audience):
		audience := make([]string, len(claims.Audience))
		for i, a := range claims.Audience {
			audience[i] = clipClaim(a)
		}
		return checkAudience, fmt.Sprintf("aud %q does not contain %q: set the expected audience with WithAudience", audience, v.audience)
	case v.issuer != "" && claims.Issuer != v.issuer:
		return checkIssuer, fmt.Sprintf("iss %q is not %q: set the expected issuer with WithIssuer", clipClaim(claims.Issuer), v.issuer)
	}
	return checkClaims, err.Error()
}

// diagnoseLookup describes a failed key lookup: a kid that the key set
// lacks, a key for another alg, or a kid that is not a string.
func (v *jwksVerifier) diagnoseLookup(ctx context.Context, parsed *jwt.Token, keys keyfunc.Keyfunc, lookupErr *keyLookupError) (check, detail string) {
	rawKID, hasKID := parsed.Header["kid"]
	kid, isString := rawKID.(string)
	if hasKID && !isString {
		return checkMalformed, "the kid header is not a string"
	}

	// KeyReadAll reads the cached keys without a fetch.
	cached, _ := keys.Storage().KeyReadAll(ctx)
	index := slices.IndexFunc(cached, func(k jwkset.JWK) bool { return k.Marshal().KID == kid })
	if index >= 0 && !errors.Is(lookupErr.err, jwkset.ErrKeyNotFound) {
		jwk := cached[index].Marshal()
		if jwk.USE != jwkset.UseSig && jwk.USE != "" {
			return checkUnknownKID, fmt.Sprintf("the key with kid %q in the JWKS at %s has use %q, not \"sig\", so it cannot verify a signature",
				clipClaim(kid), v.url, clipClaim(string(jwk.USE)))
		}
		alg, _ := parsed.Header["alg"].(string)
		return checkAlgorithm, fmt.Sprintf("the key with kid %q in the JWKS at %s is for alg %q, not %q",
			clipClaim(kid), v.url, clipClaim(jwk.ALG.String()), clipClaim(alg))
	}
	return checkUnknownKID, fmt.Sprintf("the JWKS at %s has no key with kid %q, and it is fetched again for an unknown kid at most once every %s: check that WithJWKS names the key set of the server that issued the token",
		v.url, clipClaim(kid), jwksRefetchInterval)
}

// keyLookupError is an error of the key set's jwt.Keyfunc.
type keyLookupError struct{ err error }

func (e *keyLookupError) Error() string { return "looking up the signing key: " + e.err.Error() }
func (e *keyLookupError) Unwrap() error { return e.err }

// tokenInvalidError is a token from a login that failed verification.
type tokenInvalidError struct {
	token  string // "access token" or "ID token"
	check  string // one of the check constants
	detail string // never quotes the token
}

func (e *tokenInvalidError) Error() string {
	return fmt.Sprintf("norman: login: the %s failed verification (%s): %s", e.token, e.check, e.detail)
}

func (e *tokenInvalidError) Unwrap() error { return ErrTokenInvalid }

// jwksFetchError is a failed first fetch of the key set.
type jwksFetchError struct {
	url string
	err error
}

func (e *jwksFetchError) Error() string {
	return fmt.Sprintf("norman: login: fetching the JWKS from %s failed: %s: check the URL given with WithJWKS or NORMAN_JWKS_URL and that its server is up",
		e.url, fetchCause(e.err))
}

func (e *jwksFetchError) Unwrap() error { return e.err }

// fetchCause shortens an error of jwkset to its cause: the network error,
// or the text of any other error on one line. The JWKS URL carries no
// secret, because parseJWKSURL rejects user info and queries.
func fetchCause(err error) string {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err.Error()
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}

// clipClaim shortens a claim value or header for an error message.
func clipClaim(s string) string { return clipTo(s, maxClaimText) }

func numericDateTime(d *jwt.NumericDate) time.Time {
	if d == nil {
		return time.Time{}
	}
	return d.Time
}

// newJWKSClient returns a copy of the login client that reads at most
// maxResponseBody bytes of a response, so that a key set cannot exhaust
// memory. Like the login client, it never follows redirects.
func newJWKSClient(login *http.Client) *http.Client {
	client := *login
	client.Transport = &limitedBodyTransport{base: login.Transport, limit: maxResponseBody}
	return &client
}

// limitedBodyTransport fails the read of a response body past limit bytes.
type limitedBodyTransport struct {
	base  http.RoundTripper // nil means http.DefaultTransport
	limit int64
}

func (t *limitedBodyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, remaining: t.limit, limit: t.limit}
	return resp, nil
}

type limitedBody struct {
	io.ReadCloser
	remaining, limit int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.remaining <= 0 {
		var probe [1]byte
		if n, err := b.ReadCloser.Read(probe[:]); n == 0 {
			return 0, err
		}
		return 0, fmt.Errorf("response body exceeds %d bytes", b.limit)
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.ReadCloser.Read(p)
	b.remaining -= int64(n)
	return n, err
}
