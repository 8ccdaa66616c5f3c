// Command norman is a command-line client for the Norman API and a local
// Norman test server.
//
// Usage:
//
//	norman [global flags] <command> [flags] [arguments]
//
// The commands are:
//
//	demo    start an embedded test server and show, step by step, how the
//	        norman package logs in, refreshes short-lived tokens, recovers
//	        from a revoked token and reports a rejected API key
//	serve   run the local test server (package normantest) on a loopback
//	        address until SIGINT or SIGTERM, for other programs' tests
//	signup  create an account and save its new API key to a file
//	login   log in with the API key and print the account ID and token expiry,
//	        and with -jwks-url or $NORMAN_JWKS_URL the verified ID token claims
//	token   print a valid access token, for use as
//	        curl -H "Authorization: Bearer $(norman token)" ...
//	get     send an authenticated request to a path below the base URL
//
// The base URL comes from -base-url or $NORMAN_BASE_URL, and the API key
// from the file named by -api-key-file or from $NORMAN_API_KEY. No flag
// takes the key itself, because other users of the machine can read a
// command line. Only two outputs contain a secret: the output of token, and
// the output of signup with -print-key.
//
// The exit status is 0 on success, 1 when a request or login fails or get
// receives a non-2xx status, 2 for invalid usage, and 3 when authentication
// fails: no API key was given, or the API rejected it.
//
// Run "norman <command> -h" for the flags of a command.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/norman-ml/norman-go"
)

// Exit statuses, as listed in the help text.
const (
	exitOK         = 0
	exitFailure    = 1
	exitUsage      = 2
	exitAuthFailed = 3
)

const exitStatusHelp = `Exit status:
  0  success
  1  a request or login failed, or get received a status other than 2xx
  2  invalid usage: unknown command or flag, missing argument or setting
  3  authentication failed: no API key was given, or the API rejected it
`

const environmentHelp = `Environment:
  NORMAN_BASE_URL  base URL of the API, ending in the API version, such as
                   https://api.example.com/v0; -base-url overrides it
  NORMAN_API_KEY   API key to log in with; -api-key-file overrides it
  NORMAN_JWKS_URL  JSON Web Key Set that login, token and get verify the
                   tokens against; unset means no verification; the -jwks-url
                   flag of login overrides it
`

// command is one subcommand of norman.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *environment, args []string) error
}

// commands lists the subcommands in the order the help text shows them.
var commands = []command{
	{"demo", "start an embedded test server and show logins, token refreshes and recovery step by step", runDemo},
	{"serve", "run the local test server on a loopback address until interrupted", runServe},
	{"signup", "create an account and save its new API key to a file", runSignup},
	{"login", "log in and print the account ID and the access token's expiry", runLogin},
	{"token", "print a valid access token to standard output (prints a secret)", runToken},
	{"get", "send an authenticated request to a path below the base URL", runGet},
}

// environment contains the output streams and the global flags that every
// command receives.
type environment struct {
	stdout, stderr io.Writer

	baseURL    string // -base-url; "" means $NORMAN_BASE_URL
	apiKeyFile string // -api-key-file; "" means $NORMAN_API_KEY
	verbose    bool   // -v

	usage func() // prints the running command's help; set by newFlagSet
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the command line args, without the program name, and returns the
// exit status. Tests call it in place of main.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	env := &environment{stdout: stdout, stderr: stderr}

	fs := flag.NewFlagSet("norman", flag.ContinueOnError)
	fs.SetOutput(stderr)
	env.addGlobalFlags(fs)
	fs.Usage = func() { printTopUsage(fs, stderr) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}

	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "norman: missing command")
		fs.Usage()
		return exitUsage
	}
	name, rest := fs.Arg(0), fs.Args()[1:]

	if name == "help" {
		return runHelp(fs, rest, stderr)
	}
	cmd, ok := findCommand(name)
	if !ok {
		fmt.Fprintf(stderr, "norman: unknown command %q\n", name)
		fs.Usage()
		return exitUsage
	}
	return report(cmd.name, cmd.run(ctx, env, rest), env)
}

// runHelp prints the top-level help, or the help of the command named in
// args, to stderr.
func runHelp(fs *flag.FlagSet, args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fs.Usage()
		return exitOK
	}
	cmd, ok := findCommand(args[0])
	if !ok {
		fmt.Fprintf(stderr, "norman: unknown command %q\n", args[0])
		fs.Usage()
		return exitUsage
	}
	// Every command prints its help and returns flag.ErrHelp for -h.
	cmd.run(context.Background(), &environment{stdout: io.Discard, stderr: stderr}, []string{"-h"})
	return exitOK
}

func findCommand(name string) (command, bool) {
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd, true
		}
	}
	return command{}, false
}

func printTopUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprint(w, `Norman is a command-line client for the Norman API and a local Norman test server.

Usage:
  norman [global flags] <command> [flags] [arguments]

Commands:
`)
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-7s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprint(w, `
Global flags, also accepted after the command name:
`)
	fs.PrintDefaults()
	fmt.Fprint(w, `
No flag takes the API key itself, because other users of the machine can
read a command line. Put the key in a file that only you can read and pass
-api-key-file, or set NORMAN_API_KEY.

`+environmentHelp+`
`+exitStatusHelp+`
Run "norman <command> -h" for the flags of a command.
`)
}

// addGlobalFlags defines the global flags on fs. Commands define them again
// on their own flag sets, with the values given before the command name as
// defaults, so that the flags work on either side of the name.
func (env *environment) addGlobalFlags(fs *flag.FlagSet) {
	env.addBaseURLFlag(fs)
	env.addAPIKeyFileFlag(fs, "`file` containing the API key, which overrides $NORMAN_API_KEY; surrounding whitespace is ignored")
	fs.BoolVar(&env.verbose, "v", env.verbose, "print the package's debug records, such as each login, to standard error")
}

func (env *environment) addBaseURLFlag(fs *flag.FlagSet) {
	fs.Var(quietString{&env.baseURL}, "base-url",
		"base `URL` of the API, ending in the API version, such as https://api.example.com/v0 (default $NORMAN_BASE_URL)")
}

// quietString is a string flag whose value help text never prints, because
// a base URL given before the command name may contain a password.
type quietString struct{ value *string }

func (q quietString) String() string { return "" }

func (q quietString) Set(value string) error {
	*q.value = value
	return nil
}

func (env *environment) addAPIKeyFileFlag(fs *flag.FlagSet, usage string) {
	fs.StringVar(&env.apiKeyFile, "api-key-file", env.apiKeyFile, usage)
}

// resolveBaseURL returns -base-url or $NORMAN_BASE_URL. It checks only what
// a user can get wrong on the command line: the norman package validates
// the rest when it first uses the URL.
func (env *environment) resolveBaseURL() (string, error) {
	raw := strings.TrimSpace(env.baseURL)
	if raw == "" {
		raw = strings.TrimSpace(os.Getenv(norman.EnvBaseURL))
	}
	if raw == "" {
		return "", usageErrorf("missing base URL: pass -base-url URL or set %s", norman.EnvBaseURL)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usageErrorf("invalid base URL: want an absolute http or https URL such as https://api.example.com/v0")
	}
	return raw, nil
}

// resolveAPIKey returns the key in -api-key-file, or $NORMAN_API_KEY.
func (env *environment) resolveAPIKey() (string, error) {
	if env.apiKeyFile != "" {
		key, err := readKeyFile(env.apiKeyFile)
		if err != nil {
			return "", err
		}
		if key == "" {
			return "", noAPIKeyError{detail: fmt.Sprintf("the file %s named by -api-key-file is empty", env.apiKeyFile)}
		}
		return key, nil
	}
	key := strings.TrimSpace(os.Getenv(norman.EnvAPIKey))
	if key == "" {
		return "", noAPIKeyError{detail: "set " + norman.EnvAPIKey + " or pass -api-key-file FILE"}
	}
	return key, nil
}

// readKeyFile reads an API key from path, without surrounding whitespace.
// An unreadable file is a usage error, because the path came from a flag.
func readKeyFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", usageErrorf("reading the API key file: %v", err)
	}
	return strings.TrimSpace(string(data)), nil
}

// usageError is an invalid command line or setting. It exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// errFlagsReported is returned when the flag package has already printed
// the error and the usage.
var errFlagsReported = errors.New("invalid flags")

// noAPIKeyError means that no API key was given. It exits with status 3
// and matches norman.ErrNoAPIKey.
type noAPIKeyError struct{ detail string }

func (e noAPIKeyError) Error() string        { return "no API key: " + e.detail }
func (e noAPIKeyError) Is(target error) bool { return target == norman.ErrNoAPIKey }

// newFlagSet returns a flag set for the command name that prints its usage,
// the flags, and the exit statuses to stderr.
func newFlagSet(env *environment, name, usage, details string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "Usage:\n  norman %s\n\n%s\nFlags:\n", usage, details)
		fs.PrintDefaults()
		fmt.Fprint(env.stderr, "\n"+exitStatusHelp)
	}
	env.usage = fs.Usage
	return fs
}

// parseFlags parses args into fs and checks the number of positional
// arguments.
func parseFlags(fs *flag.FlagSet, args []string, minArgs, maxArgs int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errFlagsReported
	}
	switch n := fs.NArg(); {
	case n < minArgs:
		return &usageError{msg: "missing argument"}
	case n > maxArgs:
		return usageErrorf("unexpected argument %q", fs.Arg(maxArgs))
	}
	return nil
}

// report prints err, if any, and returns the exit status for it. A usage
// error is followed by the command's help.
func report(name string, err error, env *environment) int {
	var usage *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.Is(err, errFlagsReported):
		return exitUsage
	case errors.As(err, &usage):
		fmt.Fprintf(env.stderr, "norman %s: %s\n", name, usage.msg)
		if env.usage != nil {
			env.usage()
		}
		return exitUsage
	}

	fmt.Fprintf(env.stderr, "norman %s: %s\n", name, errorText(err))
	switch {
	case errors.Is(err, norman.ErrUnauthorized), errors.Is(err, norman.ErrNoAPIKey):
		return exitAuthFailed
	case errors.Is(err, norman.ErrInsecureURL), errors.Is(err, norman.ErrNoBaseURL):
		// The base URL is a setting: plain http to a host other than a
		// loopback address is rejected before any request is sent.
		return exitUsage
	}
	return exitFailure
}

// counted returns n followed by the singular or plural noun.
func counted(n int, singular, plural string) string {
	if n == 1 {
		return "1 " + singular
	}
	return fmt.Sprintf("%d %s", n, plural)
}

// errorText returns the message of err without the "norman: " prefix that
// the norman package puts on its errors, and with a *url.Error reduced to
// its method, URL and cause.
func errorText(err error) string {
	var urlErr *url.Error
	if errors.As(err, &urlErr) && urlErr == err {
		return urlErr.Op + " " + withoutQuery(urlErr.URL) + ": " + errorText(urlErr.Err)
	}
	return strings.TrimPrefix(err.Error(), "norman: ")
}

// withoutQuery drops the user info, query and fragment of a URL, where
// secrets are most often carried.
func withoutQuery(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(malformed URL)"
	}
	u.User = nil
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}
