// Package norman authenticates HTTP requests to the Norman API.
//
// A [Manager] logs in with an API key (POST authenticate/login/key) and
// caches the access token, ID token and account id that the login returns.
// A [Transport] wraps any [http.RoundTripper] and adds the access token to
// every request to the Norman API, logging in again when the token is about
// to expire:
//
//	mgr := norman.NewManager() // reads NORMAN_BASE_URL and NORMAN_API_KEY
//	client := &http.Client{Transport: norman.NewTransport(mgr, nil)}
//
// [SignupAndGenerateKey] creates an account and returns its first API key.
// Secrets are held in [Sensitive], which prints, logs and marshals as
// "<redacted>".
//
// # Token lifetime
//
// The access token's exp and iat claims are read once per login, without
// checking the signature, so tokens signed with any alg, and tokens with
// padded segments or a float or string exp, are read alike. Expiry is judged
// on the server's clock, which the login response's Date header gives. A
// local clock that is off by hours therefore neither logs in on every
// request nor keeps a dead token.
//
// With L the token's lifetime, exp minus the time the login response
// arrived, both on the server's clock:
//
//   - the token counts as expired min(30s, L/10) before exp, so that no
//     request carries a token that lapses in flight;
//   - in the last min(5m, L/4) before exp the token is stale: requests still
//     use it, and one login starts in the background. When logins are slow
//     for the lifetime, this window widens to twice the duration of the
//     last login, up to L/2, so that the refresh ends before the token
//     expires;
//   - a token whose exp cannot be read (an opaque token, no exp claim) gets
//     a lifetime of one minute;
//   - a token that has already expired when it arrives fails the login.
//
// # Verification
//
// By default tokens are decoded, not verified, as in the Python SDK. With
// [WithJWKS], or $NORMAN_JWKS_URL, the access and ID token of every login
// are verified against that JSON Web Key Set before they are stored or
// sent. A token passes when all of these hold:
//
//   - its alg is RS256, ES256 or EdDSA; "none" and HMAC are rejected;
//   - its signature matches the key that its kid names in the key set;
//   - it has an exp claim that is later than the server's time, taken
//     from the Date header as above, so a skewed local clock is tolerated;
//   - its nbf claim, if present, is not later than the server's time;
//   - its aud claim contains "norman:client", or the value of [WithAudience];
//   - its iss claim equals the value of [WithIssuer], if one is set.
//
// A token that fails is neither stored nor sent. The login returns an
// error that matches [ErrTokenInvalid] and names the token and the failed
// check, and the backoff of failed logins applies. The key set is fetched
// at the first login, refreshed every hour in the background and, when a
// token names an unknown kid, fetched again at most once every 30 s.
// [Manager.Close] stops the background refresh. [Manager.IDTokenClaims]
// returns the claims of the verified ID token.
//
// # Concurrency
//
// A Manager and a Transport are safe for concurrent use. With a fresh token,
// a request takes no lock and makes no call to the auth server. However many
// goroutines need a new token at once, one login is made and all of them get
// its result. The login runs on its own context with a 30 s timeout, not on
// any caller's: a caller whose context ends gets ctx.Err() at once, and the
// login goes on for the others.
//
// # Failures
//
// A login retries network errors, 5xx and 429 answers up to 3 times, waiting
// about 5 s in all and honouring Retry-After. A Retry-After that would
// outlast the login's timeout ends the login with an error, and a caller
// whose deadline comes before the next attempt gets an error at once that
// names the time of that attempt. A login that still fails is
// remembered: callers get its error at once until a backoff has passed,
// starting at 1 s and doubling to 30 s, so a bad API key does not flood the
// login endpoint. A login answered 401 or 403 returns an error that matches
// [ErrUnauthorized]. A failed login never discards a token that is still
// valid; a failed background refresh is retried after 30 s, or when the
// token expires if that is sooner. [Manager.SetAPIKey] clears the cached
// tokens and the remembered failure.
//
// When the API answers 401 to a request, the Transport makes one login,
// shared by all requests that carried the same token, and retries the
// request once if its body can be replayed. A second 401 is returned to the
// caller. (If the retry used a newer token that another request had already
// fetched, and that token is rejected too, one login is made for it and the
// request is sent a last time.) Logins forced by 401s start at least a
// second apart, and a request inside that second waits for it, so an
// endpoint that rejects every token cannot drive a login per request. A
// failed login after a 401 doubles the backoff like any failed login
// without a valid token, and a caller whose context ends while it waits
// gets ctx.Err().
//
// # Security
//
// The token goes only to requests whose scheme, host and port match the
// base URL or an origin named with [WithAllowedOrigins]. A redirect to
// another host, or any other request through the same client, carries no
// token. The API key and tokens are never sent over plain HTTP except to a
// loopback address (127.0.0.0/8, ::1, localhost): a plain http base URL or
// allowed origin with any other host makes logins and requests fail with
// [ErrInsecureURL] before anything is sent. Logins never follow redirects.
//
// No exported type shows a secret through fmt, log/slog or encoding/json.
// Errors built from server responses replace the API key with "<redacted>"
// and drop the query of any URL they name, and at most 512 bytes of a
// response body are quoted.
//
// # Retries
//
// To retry API requests, put the Transport under a
// [github.com/hashicorp/go-retryablehttp] client, as its
// HTTPClient.Transport, and set its CheckRetry to [CheckRetry]. Each attempt
// then passes through the Transport with a fresh body and the current token,
// and errors that no retry can fix, such as a rejected API key, are not
// retried.
package norman
