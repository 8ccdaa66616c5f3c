// Package slog shows how to send the log records of a norman.Manager to
// a [log/slog.Logger] that writes JSON. It has no code of its own; the
// example in its tests runs each kind of record.
//
// Pass the logger with norman.WithLogger:
//
//	logger := slog.New(slog.NewJSONHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))
//	mgr := norman.NewManager(norman.WithLogger(logger))
//
// Without WithLogger the manager writes to [log/slog.Default] at the time
// of each record; the default handler drops Debug records. No record
// contains an API key or a token. Account IDs, URLs without their query,
// and error texts, which have secrets replaced by "<redacted>", do appear.
//
// # Debug
//
// Logins and changes of key, which happen in normal operation:
//
//   - "norman: logged in", after every successful login. Its attributes are
//     reason, account_id, expires_in and expires_at. The reason is "no
//     token", "token about to expire" for a background refresh, "token
//     expired", or "token rejected" after a 401 from the API. expires_in is
//     a duration, the token's lifetime on the server's clock, and
//     expires_at is the token's exp claim, or the zero time when the token
//     has no readable exp.
//   - "norman: API key changed; cached tokens dropped", when SetAPIKey gets
//     a key other than the current one.
//   - "norman: login result dropped; the API key changed while it ran".
//   - "norman: signed up", with account_id and name, from
//     norman.SignupAndGenerateKey when it is given WithLogger.
//
// # Warn
//
// Failures, and the recoveries they lead to:
//
//   - "norman: login attempt failed; retrying", with attempt, the number of
//     the attempt that failed, counting from 1, and either status, for a
//     5xx or 429 response, or error, for a network error.
//   - "norman: login failed", when a login has failed for good, with
//     reason (as above), error and retry_in (a duration: how long callers
//     get this error before another login is tried).
//   - "norman: API rejected the access token; logging in again", when the
//     API responds 401 to a request, with method, url and account_id.
//   - "norman: no new token after a 401; returning the response", with
//     error, when the login after a 401 fails, or when the rejected token
//     came from a login that itself followed a 401.
//   - "norman: cannot replay the request body; returning the 401
//     response", with error, when GetBody fails for the retry after a 401.
//   - "norman: refreshing the JWKS failed; keeping the keys fetched before",
//     with url and error, only for a manager that verifies tokens with
//     WithJWKS.
//
// The manager logs nothing at Info or Error level.
//
// A [github.com/hashicorp/go-retryablehttp] client accepts the same
// *slog.Logger as its Logger, which puts its records about attempts and
// retries in the same stream.
package slog
