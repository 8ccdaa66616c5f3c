package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/normantest"
)

// defaultTimeout bounds signup, login, token and get, including the
// norman package's login retries.
const defaultTimeout = time.Minute

// loginRecordWait bounds the wait for the "logged in" record, which the
// norman package writes just after the login's callers are released.
const loginRecordWait = 2 * time.Second

// addClientFlags defines the flags of the commands that log in.
func (env *environment) addClientFlags(fs *flag.FlagSet, timeout *time.Duration) {
	env.addBaseURLFlag(fs)
	env.addAPIKeyFileFlag(fs, "`file` containing the API key, which overrides $NORMAN_API_KEY; surrounding whitespace is ignored")
	fs.BoolVar(&env.verbose, "v", env.verbose, "print the package's debug records, such as each login, to standard error")
	fs.DurationVar(timeout, "timeout", defaultTimeout, "maximum `duration` of the whole command, logins and their retries included, such as 30s or 2m")
}

// newManager returns a Manager for the base URL and API key that env
// names, with opts applied after them, and the log that it writes to
// standard error through. The caller must call the log's finish method and
// the manager's Close method before it returns.
func (env *environment) newManager(opts ...norman.Option) (*norman.Manager, *commandLog, error) {
	base, err := env.resolveBaseURL()
	if err != nil {
		return nil, nil, err
	}
	key, err := env.resolveAPIKey()
	if err != nil {
		return nil, nil, err
	}
	log := newCommandLog(env.stderr, env.verbose)
	mgr := norman.NewManager(append([]norman.Option{
		norman.WithBaseURL(base),
		norman.WithAPIKey(key),
		norman.WithLogger(log.logger()),
	}, opts...)...)
	return mgr, log, nil
}

func runLogin(ctx context.Context, env *environment, args []string) error {
	var (
		timeout time.Duration
		jwksURL string
	)
	fs := newFlagSet(env, "login", "login [flags]", `Login logs in to the API with the API key and prints the account ID and
when the access token expires. It prints no token.

With -jwks-url or $NORMAN_JWKS_URL, login also verifies the access and ID
tokens against that JSON Web Key Set and prints the verified claims of the
ID token: subject, issuer, audience and expiry. A token that fails
verification fails the login.
`)
	env.addClientFlags(fs, &timeout)
	fs.StringVar(&jwksURL, "jwks-url", "", "`URL` of the JSON Web Key Set to verify the tokens against, such as https://api.example.com/v0/.well-known/jwks.json (default $NORMAN_JWKS_URL)")
	if err := parseFlags(fs, args, 0, 0); err != nil {
		return err
	}

	var opts []norman.Option
	if strings.TrimSpace(jwksURL) != "" {
		opts = append(opts, norman.WithJWKS(jwksURL))
	} else {
		jwksURL = os.Getenv(norman.EnvJWKSURL) // the norman package reads it too
	}
	mgr, log, err := env.newManager(opts...)
	if err != nil {
		return err
	}
	defer mgr.Close()
	defer log.finish(false)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := mgr.InvalidateAccessToken(ctx); err != nil {
		return err
	}

	fmt.Fprintf(env.stdout, "Logged in as account %s.\n", mgr.AccountID())
	rec, ok := log.awaitLogin(loginRecordWait)
	expiresAt, expiresIn := rec.time("expires_at"), rec.duration("expires_in")
	switch {
	case !ok:
		fmt.Fprintln(env.stdout, "The access token's expiry is unknown, because the norman package logged no login record.")
	case expiresAt.IsZero():
		fmt.Fprintf(env.stdout, "The access token has no readable expiry, so it is used for %s.\n", expiresIn)
	default:
		fmt.Fprintf(env.stdout, "The access token expires at %s, in %s.\n",
			expiresAt.UTC().Format(time.DateTime+" MST"), roundDuration(expiresIn))
	}
	if strings.TrimSpace(jwksURL) != "" {
		printVerifiedClaims(env.stdout, mgr, strings.TrimSpace(jwksURL))
	}
	return nil
}

// printVerifiedClaims prints the claims of the ID token of mgr's login,
// which passed verification against the JWKS at jwksURL.
func printVerifiedClaims(w io.Writer, mgr *norman.Manager, jwksURL string) {
	claims, err := mgr.IDTokenClaims()
	if err != nil {
		fmt.Fprintf(w, "The access token passed verification against %s, but there are no ID token claims to print: %s.\n",
			jwksURL, errorText(err))
		return
	}
	fmt.Fprintf(w, "The tokens passed verification against %s.\n", jwksURL)
	fmt.Fprintf(w, "  subject:  %s\n", claims.Subject)
	fmt.Fprintf(w, "  issuer:   %s\n", claims.Issuer)
	fmt.Fprintf(w, "  audience: %s\n", strings.Join(claims.Audience, ", "))
	fmt.Fprintf(w, "  expires:  %s\n", claims.ExpiresAt.UTC().Format(time.DateTime+" MST"))
	if claims.Name != "" {
		fmt.Fprintf(w, "  name:     %s\n", claims.Name)
	}
}

func runToken(ctx context.Context, env *environment, args []string) error {
	var timeout time.Duration
	fs := newFlagSet(env, "token", "token [flags]", `Token logs in and prints the new access token and a newline to standard
output, and nothing else, for use in a shell:

  curl -H "Authorization: Bearer $(norman token)" "$NORMAN_BASE_URL/..."

This is the one command that always prints a secret: keep its output out of
logs and shared terminals. Tokens are not cached between runs, so each run
makes one login, and the token is valid for the API's full token lifetime,
which "norman login" shows.
`)
	env.addClientFlags(fs, &timeout)
	if err := parseFlags(fs, args, 0, 0); err != nil {
		return err
	}

	mgr, log, err := env.newManager()
	if err != nil {
		return err
	}
	defer mgr.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	token, err := mgr.Token(ctx)
	log.finish(err == nil)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(env.stdout, token.Value())
	return err
}

// headerFlags collects the repeatable -H flag of get.
type headerFlags []string

func (h *headerFlags) String() string { return strings.Join(*h, ", ") }

func (h *headerFlags) Set(value string) error {
	name, _, ok := strings.Cut(value, ":")
	if !ok || strings.TrimSpace(name) == "" || strings.ContainsAny(strings.TrimSpace(name), " \t") {
		return fmt.Errorf("invalid header %q: want 'Name: value'", value)
	}
	*h = append(*h, value)
	return nil
}

func runGet(ctx context.Context, env *environment, args []string) error {
	var (
		timeout time.Duration
		method  string
		data    string
		headers headerFlags
	)
	fs := newFlagSet(env, "get", "get [flags] PATH", `Get sends an authenticated request to PATH below the base URL, such as
authenticate/accounts/get, which with the base URL https://api.example.com/v0
becomes https://api.example.com/v0/authenticate/accounts/get whether or not
the base URL ends in a slash. PATH may end in a query string.

The status line goes to standard error and the response body to standard
output. The request carries "Accept: application/json", and with -d also
"Content-Type: application/json", unless -H replaces them. Any Authorization
header given with -H is replaced by the access token. A 401 response makes
the norman package log in again and resend the request once.
`)
	env.addClientFlags(fs, &timeout)
	fs.StringVar(&method, "X", "", "request `method`, such as GET, POST or PUT (default GET, or POST when -d is given)")
	fs.StringVar(&data, "d", "", "request `body`, sent as it is")
	fs.Var(&headers, "H", "request `header` written 'Name: value'; repeat the flag for more headers")
	if err := parseFlags(fs, args, 1, 1); err != nil {
		return err
	}

	base, err := env.resolveBaseURL()
	if err != nil {
		return err
	}
	target, err := joinPath(base, fs.Arg(0))
	if err != nil {
		return err
	}
	hasBody := isFlagSet(fs, "d")
	method = strings.ToUpper(strings.TrimSpace(method))
	if method == "" {
		method = http.MethodGet
		if hasBody {
			method = http.MethodPost
		}
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	if hasBody {
		body = strings.NewReader(data) // a strings.Reader body can be resent after a 401
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return usageErrorf("invalid request: %v", err)
	}
	req.Header.Set("Accept", "application/json")
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	setHeaders(req, headers)

	mgr, log, err := env.newManager()
	if err != nil {
		return err
	}
	defer mgr.Close()
	client := &http.Client{Transport: norman.NewTransport(mgr, nil)}
	resp, err := client.Do(req)
	log.finish(err == nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	fmt.Fprintf(env.stderr, "%s %s\n", resp.Proto, resp.Status)
	if _, err := io.Copy(env.stdout, resp.Body); err != nil {
		return fmt.Errorf("reading the response body: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s %s: the server returned %s", method, target, resp.Status)
	}
	return nil
}

// setHeaders adds the -H headers to req. The first value given for a name
// replaces the default value of that header, and later ones are added.
func setHeaders(req *http.Request, headers []string) {
	replaced := make(map[string]bool)
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		name = http.CanonicalHeaderKey(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		if name == "Host" {
			req.Host = value
			continue
		}
		if !replaced[name] {
			req.Header.Del(name)
			replaced[name] = true
		}
		req.Header.Add(name, value)
	}
}

// joinPath appends path, which may end in a query, to the base URL the way
// the norman package joins its own paths: the base URL's path is kept
// whether or not it ends in a slash.
func joinPath(base, path string) (string, error) {
	baseURL, err := url.Parse(base)
	if err != nil {
		return "", usageErrorf("invalid base URL: %v", err)
	}
	ref, err := url.Parse(path)
	if err != nil {
		return "", usageErrorf("invalid PATH %q: %v", path, err)
	}
	if ref.Scheme != "" || ref.Host != "" {
		return "", usageErrorf("invalid PATH %q: give a path relative to the base URL, such as authenticate/accounts/get", path)
	}

	joined := *baseURL
	joined.RawPath = strings.TrimSuffix(baseURL.EscapedPath(), "/") + "/" + strings.TrimPrefix(ref.EscapedPath(), "/")
	if joined.Path, err = url.PathUnescape(joined.RawPath); err != nil {
		return "", usageErrorf("invalid PATH %q: %v", path, err)
	}
	joined.RawQuery = ref.RawQuery
	joined.Fragment, joined.RawFragment = "", ""
	return joined.String(), nil
}

func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func runSignup(ctx context.Context, env *environment, args []string) error {
	var (
		timeout  time.Duration
		name     string
		keyFile  string
		printKey bool
	)
	fs := newFlagSet(env, "signup", "signup -name NAME (-write-key FILE | -print-key) [flags]", `Signup creates an account named NAME with PUT authenticate/signup/key and
prints its ID, name and creation time. The API returns the account's API key
only once, so signup needs a place for it: -write-key saves it to a new file
that only you can read, and -print-key prints it to standard output. Without
-print-key, signup prints no secret.
`)
	env.addBaseURLFlag(fs)
	fs.BoolVar(&env.verbose, "v", env.verbose, "print the package's debug records to standard error")
	fs.DurationVar(&timeout, "timeout", defaultTimeout, "maximum `duration` of the signup request, such as 30s or 2m")
	fs.StringVar(&name, "name", "", "`name` of the new account (required)")
	fs.StringVar(&keyFile, "write-key", "", "new `file` to write the API key to, with permissions 0600; an existing file is never replaced")
	fs.BoolVar(&printKey, "print-key", false, "print the API key to standard output")
	if err := parseFlags(fs, args, 0, 0); err != nil {
		return err
	}
	if strings.TrimSpace(name) == "" {
		return usageErrorf("missing -name: pass the name of the new account")
	}
	if keyFile == "" && !printKey {
		return usageErrorf("missing -write-key FILE or -print-key: the API key is returned only once, so signup needs a place for it")
	}
	base, err := env.resolveBaseURL()
	if err != nil {
		return err
	}

	// The key file is created before the signup, so that a bad path fails
	// before an account exists whose key would be lost.
	var file *os.File
	if keyFile != "" {
		if file, err = createKeyFile(keyFile); err != nil {
			return err
		}
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := newCommandLog(env.stderr, env.verbose)
	resp, err := norman.SignupAndGenerateKey(ctx, name,
		norman.WithBaseURL(base),
		norman.WithLogger(log.logger()),
	)
	log.finish(false) // the signup logs before it returns
	if err != nil {
		if file != nil {
			file.Close()
			os.Remove(keyFile)
		}
		return err
	}

	fmt.Fprintf(env.stdout, "Signed up account %q with ID %s, created %s.\n",
		resp.Account.Name, resp.Account.ID, resp.Account.CreationTime.UTC().Format(time.DateTime+" MST"))
	if file != nil {
		if err := saveKey(file, resp.APIKey.Value()); err != nil {
			return fmt.Errorf("the account exists, but its API key could not be saved: %w", err)
		}
		fmt.Fprintf(env.stdout, "Wrote its API key to %s, readable only by you (permissions 0600).\n", keyFile)
	}
	if printKey {
		fmt.Fprintf(env.stdout, "API key: %s\n", resp.APIKey.Value())
	}
	return nil
}

// createKeyFile creates a new file for an API key with permissions 0600.
// It never opens an existing file, which might hold another key.
func createKeyFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, usageErrorf("the API key file %s already exists: remove it or choose another path", path)
	}
	if err != nil {
		return nil, fmt.Errorf("creating the API key file: %w", err)
	}
	return f, nil
}

// saveKey writes key and a newline to f and closes f.
func saveKey(f *os.File, key string) error {
	if _, err := io.WriteString(f, key+"\n"); err != nil {
		f.Close()
		return fmt.Errorf("writing the API key file %s: %w", f.Name(), err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the API key file %s: %w", f.Name(), err)
	}
	return nil
}

func runServe(ctx context.Context, env *environment, args []string) error {
	var (
		lifetime time.Duration
		account  string
		keyFile  string
	)
	fs := newFlagSet(env, "serve", "serve [-lifetime DURATION] [-account NAME (-api-key-file FILE | -write-key FILE)]", `Serve runs the local Norman test server of package normantest on a random
loopback port, prints its base URL on the first line of standard output as
"Base URL: http://127.0.0.1:PORT/v0", and serves until SIGINT (Ctrl-C) or
SIGTERM. Programs under test can sign up, log in and call
POST authenticate/accounts/get against it.

With -account, serve also creates an account with a known API key: the key
in -api-key-file or $NORMAN_API_KEY, or with -write-key a new random key
"nk-test-..." written to a new file. Serve never prints a key.
`)
	fs.DurationVar(&lifetime, "lifetime", time.Hour, "lifetime of each access token the server issues, such as 2s or 1h; rounded up to whole seconds")
	fs.StringVar(&account, "account", "", "`name` of an account to create at start")
	env.addAPIKeyFileFlag(fs, "`file` containing the API key of the -account account (default $NORMAN_API_KEY)")
	fs.StringVar(&keyFile, "write-key", "", "new `file` to write a generated API key for the -account account to, with permissions 0600; an existing file is never replaced")
	if err := parseFlags(fs, args, 0, 0); err != nil {
		return err
	}
	if lifetime <= 0 {
		return usageErrorf("invalid -lifetime %s: want a positive duration such as 2s", lifetime)
	}

	var (
		key       string
		keySource string
		file      *os.File
		err       error
	)
	switch {
	case account == "" && keyFile != "":
		return usageErrorf("-write-key needs -account NAME")
	case account == "":
	case keyFile != "" && env.apiKeyFile != "":
		return usageErrorf("pass either -api-key-file or -write-key, not both")
	case keyFile != "":
		if file, err = createKeyFile(keyFile); err != nil {
			return err
		}
		key, keySource = "nk-test-"+randomHex(16), "the new file "+keyFile
	default:
		if key, err = env.resolveAPIKey(); err != nil {
			var usage *usageError
			if errors.As(err, &usage) {
				return err
			}
			return usageErrorf("-account needs an API key: pass -api-key-file FILE or -write-key FILE, or set %s", norman.EnvAPIKey)
		}
		keySource = "$" + norman.EnvAPIKey
		if env.apiKeyFile != "" {
			keySource = env.apiKeyFile
		}
	}

	srv := normantest.NewServer()
	defer srv.Close()
	srv.SetTokenLifetime(lifetime)

	fmt.Fprintf(env.stdout, "Base URL: %s\n", srv.URL)
	fmt.Fprintf(env.stdout, "JWKS URL: %s\n", srv.JWKSURL())
	fmt.Fprintf(env.stdout, "The Norman test server is listening; each access token it issues is valid for %s.\n",
		time.Duration(lifetimeSeconds(lifetime))*time.Second)
	if account != "" {
		id := srv.AddAccount(account, key)
		if file != nil {
			if err := saveKey(file, key); err != nil {
				return err
			}
		}
		fmt.Fprintf(env.stdout, "Account %q (ID %s) logs in with the API key in %s.\n", account, id, keySource)
	}
	fmt.Fprintln(env.stdout, "Stop the server with Ctrl-C or SIGTERM.")

	<-ctx.Done()
	fmt.Fprintf(env.stdout, "Stopped the server after %s, %s and %s.\n",
		counted(srv.Signups(), "signup", "signups"), counted(srv.Logins(), "login", "logins"),
		counted(srv.Requests(), "authenticated request", "authenticated requests"))
	return nil
}

// lifetimeSeconds returns d in whole seconds, rounded up, as the test
// server writes it into the exp claim.
func lifetimeSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// randomHex returns n random bytes as 2n hexadecimal digits.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never returns an error, see crypto/rand.Read
	return hex.EncodeToString(b)
}
