package norman

import (
	"log/slog"
	"net/http"
	"os"
	"time"
)

// Defaults for logins and token lifetimes. The lifetime rules are described
// in the package documentation.
var (
	loginTimeout          = 30 * time.Second // one login, retries included, for all its waiters
	loginRetryMax         = 3                // retries after the first login attempt
	loginRetryWaitMin     = 1 * time.Second  // first wait between login attempts; later waits double
	loginRetryWaitMax     = 2 * time.Second  // so three retries wait about 5 s in all
	failureBackoffMin     = 1 * time.Second  // first pause after a failed login
	failureBackoffMax     = 30 * time.Second // the pause doubles up to this
	refreshPause          = 30 * time.Second // pause after a failed background refresh
	unknownExpiryLifetime = 1 * time.Minute  // lifetime of a token whose exp cannot be read
	maxExpiryMargin       = 30 * time.Second // a token counts as expired this long before exp
	maxStaleWindow        = 5 * time.Minute  // a background refresh starts this long before exp
	forcedLoginInterval   = 1 * time.Second  // minimum time between two logins forced by 401s
	maxResponseBody       = int64(1 << 20)   // largest login or signup response read
)

// Environment variables read by [NewManager] and [SignupAndGenerateKey] when
// the matching option is not given.
const (
	EnvBaseURL = "NORMAN_BASE_URL"
	EnvAPIKey  = "NORMAN_API_KEY"
	EnvJWKSURL = "NORMAN_JWKS_URL" // read by NewManager only
)

// An Option configures a [Manager] or a [SignupAndGenerateKey] call.
type Option func(*options)

type options struct {
	baseURL        string
	baseURLSet     bool
	apiKey         string
	apiKeySet      bool
	httpClient     *http.Client
	logger         *slog.Logger
	now            func() time.Time
	origins        []string
	retry          retryPolicy
	forcedInterval time.Duration
	jwksURL        string
	jwksURLSet     bool
	audience       string
	issuer         string
}

// retryPolicy controls the retries of one login.
type retryPolicy struct {
	max              int
	waitMin, waitMax time.Duration
}

// WithBaseURL sets the base URL of the Norman API, ending in the API
// version, such as "https://api.example.com/v0". Request paths are joined
// after it. Without this option the base URL is $NORMAN_BASE_URL.
//
// The URL must use https, or http with a loopback host (127.0.0.1, ::1 or
// localhost), and must not contain user info, a query or a fragment. An
// invalid URL is reported by the first call that needs it.
func WithBaseURL(url string) Option {
	return func(o *options) { o.baseURL, o.baseURLSet = url, true }
}

// WithAPIKey sets the API key to log in with. Without this option the key
// is $NORMAN_API_KEY. [SignupAndGenerateKey] ignores it.
func WithAPIKey(key string) Option {
	return func(o *options) { o.apiKey, o.apiKeySet = key, true }
}

// WithHTTPClient sets the client for login and signup calls only; API
// requests go through the [Transport]'s Base. Nil means a default client.
// The manager uses a copy that never follows redirects, so that the API key
// is never sent to another URL. A client without a Transport gets a clone
// of [http.DefaultTransport], whose idle connections the manager may close
// after a failed login.
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) { o.httpClient = c }
}

// WithLogger sets the logger. Nil, or no option, means [slog.Default] at the
// time of each record. Logins and refreshes are logged at Debug, retries and
// failures at Warn, and no record ever contains a secret.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithClock sets the function that reads the local clock, for tests that
// control token expiry. Nil means [time.Now].
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithAllowedOrigins names more origins, written "scheme://host" or
// "scheme://host:port", whose requests get the access token, in addition to
// the base URL's origin. Plain http origins must be loopback addresses. An
// invalid origin is reported by the first call that needs it.
func WithAllowedOrigins(origins ...string) Option {
	return func(o *options) { o.origins = append(o.origins, origins...) }
}

// WithJWKS turns on token verification: the access and ID token of every
// login are verified against the JSON Web Key Set at url before they are
// stored or sent. Without this option the URL is $NORMAN_JWKS_URL, and an
// empty URL, the default, means that tokens are not verified, only decoded.
// WithJWKS("") turns verification off even when $NORMAN_JWKS_URL is set.
//
// The URL follows the rules of [WithBaseURL]: https, or http with a
// loopback host, and no user info, query or fragment. An invalid URL is
// reported by the first call that needs it. The key set is fetched at the
// first login through the client of [WithHTTPClient], kept in memory,
// refreshed every hour in the background until [Manager.Close], and
// fetched again when a token names a key ID that the set lacks, at most
// once every 30 s. The package documentation lists the checks.
func WithJWKS(url string) Option {
	return func(o *options) { o.jwksURL, o.jwksURLSet = url, true }
}

// WithAudience sets the audience that every verified token's aud claim must
// contain. Empty, or no option, means "norman:client". It has no effect
// without [WithJWKS].
func WithAudience(aud string) Option {
	return func(o *options) { o.audience = aud }
}

// WithIssuer sets the value that every verified token's iss claim must
// equal. Empty, or no option, means that the issuer is not checked. It has
// no effect without [WithJWKS].
func WithIssuer(iss string) Option {
	return func(o *options) { o.issuer = iss }
}

// withLoginRetry sets the retries of one login. Tests use it to keep
// failing servers fast.
func withLoginRetry(maxRetries int, waitMin, waitMax time.Duration) Option {
	return func(o *options) { o.retry = retryPolicy{max: maxRetries, waitMin: waitMin, waitMax: waitMax} }
}

// withForcedLoginInterval sets the minimum time between logins forced by
// 401s, so that tests can make it long enough to observe or short enough
// not to wait.
func withForcedLoginInterval(d time.Duration) Option {
	return func(o *options) { o.forcedInterval = d }
}

// newOptions applies opts over the defaults and the environment.
func newOptions(opts []Option) *options {
	o := &options{
		retry:          retryPolicy{max: loginRetryMax, waitMin: loginRetryWaitMin, waitMax: loginRetryWaitMax},
		forcedInterval: forcedLoginInterval,
	}
	for _, opt := range opts {
		if opt != nil {
			opt(o)
		}
	}

	if !o.baseURLSet {
		o.baseURL = os.Getenv(EnvBaseURL)
	}
	if !o.apiKeySet {
		o.apiKey = os.Getenv(EnvAPIKey)
	}
	if !o.jwksURLSet {
		o.jwksURL = os.Getenv(EnvJWKSURL)
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o
}
