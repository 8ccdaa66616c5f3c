package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/norman-ml/norman-go/normantest"
)

// Patterns of the secrets that no output other than token's and
// signup -print-key's may contain: a test server's generated API key and a
// JWT's base64url-encoded JSON header.
var (
	generatedKeyPattern = regexp.MustCompile(`nk-test-[0-9a-f]{8,}`)
	jwtPattern          = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.`)
)

// demoSecrets collects every secret that the demo reports through
// demoSecretSeen, for checkNoSecrets.
var demoSecrets struct {
	sync.Mutex
	values []string
}

func TestMain(m *testing.M) {
	demoSecretSeen = func(secret string) {
		demoSecrets.Lock()
		defer demoSecrets.Unlock()
		demoSecrets.values = append(demoSecrets.values, secret)
	}
	os.Exit(m.Run())
}

// checkNoSecrets fails t if output contains a secret the demo handled, one
// of extra, or anything that looks like a generated key or a JWT.
func checkNoSecrets(t *testing.T, output string, extra ...string) {
	t.Helper()
	demoSecrets.Lock()
	secrets := append(append([]string(nil), demoSecrets.values...), extra...)
	demoSecrets.Unlock()

	for i, secret := range secrets {
		if strings.Contains(output, secret) {
			t.Errorf("output contains secret number %d (%d bytes)", i, len(secret))
		}
	}
	if match := generatedKeyPattern.FindString(output); match != "" {
		t.Errorf("output contains an API key: %.12s...", match)
	}
	if match := jwtPattern.FindString(output); match != "" {
		t.Errorf("output contains a JWT: %.12s...", match)
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func runNorman(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func (r result) String() string {
	return fmt.Sprintf("exit status %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// clearEnvironment unsets the variables that the commands read.
func clearEnvironment(t *testing.T) {
	t.Setenv("NORMAN_BASE_URL", "")
	t.Setenv("NORMAN_API_KEY", "")
	t.Setenv("NORMAN_JWKS_URL", "")
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDemoHumanOutput(t *testing.T) {
	t.Parallel()
	start := time.Now()
	res := runNorman(t, "demo")
	elapsed := time.Since(start)

	if res.code != exitOK {
		t.Fatalf("demo failed:\n%s", res)
	}
	if elapsed > 30*time.Second {
		t.Errorf("demo took %s, want less than 30s", elapsed)
	}
	if res.stderr != "" {
		t.Errorf("stderr = %q, want nothing", res.stderr)
	}

	for _, want := range []string{
		"1. Sign up",
		`Signed up account "demo" with ID `,
		"Its API key prints as <redacted>.",
		"2. First login",
		"(reason: no token). The access token expires at ",
		"AccessToken: <redacted>",
		"3. Requests across 3 token lifetimes",
		"4. Revoked token",
		"The server returned 401 Unauthorized for POST ",
		"Logged in again (reason: token rejected).",
		"The transport resent the request with the new token, and the server returned 200 OK. For this one call the server received 2 requests and 1 login.",
		"5. Rejected API key",
		"errors.Is(err, norman.ErrUnauthorized) is true. The error reads: norman: API key rejected by ",
		"The server received 1 login for the 2 requests.",
		"6. Verified tokens",
		"created with norman.WithJWKS(",
		"Both tokens passed the checks of signature, key ID, algorithm, expiry and audience. The verified ID token names subject ",
		"and audience norman:client, and expires at ",
		"The server received 1 JWKS request.",
		"7. Summary",
		"Requests: ",
		"Logins: the server received ",
		"Unexpected events: 0.",
	} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("output does not contain %q", want)
		}
	}

	refresh := regexp.MustCompile(`\(reason: token (about to expire|expired)\)\. The access token expires at \d\d:\d\d:\d\d UTC, in [0-9.]+m?s\.`)
	if n := len(refresh.FindAllString(res.stdout, -1)); n < 3 {
		t.Errorf("output reports %d refreshes with reason and expiry, want at least 3", n)
	}
	checkNoSecrets(t, res.stdout)
	if t.Failed() {
		t.Logf("output:\n%s", res.stdout)
	}
}

func TestDemoJSONLines(t *testing.T) {
	t.Parallel()
	res := runNorman(t, "demo", "-json", "-lifetime", "2s", "-lifetimes", "3")
	if res.code != exitOK {
		t.Fatalf("demo -json failed:\n%s", res)
	}
	checkNoSecrets(t, res.stdout)

	events := make(map[string][]map[string]any) // by "step/event"
	for i, line := range strings.Split(strings.TrimSuffix(res.stdout, "\n"), "\n") {
		var event map[string]any
		if err := json.Unmarshal([]byte(line), &event); err != nil {
			t.Fatalf("line %d is not a JSON object: %v\n%s", i+1, err, line)
		}
		for _, key := range []string{"elapsed_s", "step", "event", "message"} {
			if _, ok := event[key]; !ok {
				t.Errorf("line %d has no %q: %s", i+1, key, line)
			}
		}
		name := event["step"].(string) + "/" + event["event"].(string)
		events[name] = append(events[name], event)
	}

	only := func(name string) map[string]any {
		t.Helper()
		if len(events[name]) != 1 {
			t.Fatalf("got %d %q events, want 1", len(events[name]), name)
		}
		return events[name][0]
	}
	checkExpiry := func(name string, event map[string]any) {
		t.Helper()
		if _, err := time.Parse(time.RFC3339, event["expires_at"].(string)); err != nil {
			t.Errorf("%s: expires_at: %v", name, err)
		}
		if in, _ := event["expires_in_s"].(float64); in <= 0 || in > 2 {
			t.Errorf("%s: expires_in_s = %v, want a lifetime in (0, 2]", name, event["expires_in_s"])
		}
	}

	if key := only("signup/signed_up")["api_key"]; key != "<redacted>" {
		t.Errorf("signup api_key = %v, want <redacted>", key)
	}
	login := only("first_login/login")
	if login["reason"] != "no token" {
		t.Errorf("first login reason = %v, want no token", login["reason"])
	}
	checkExpiry("first login", login)

	refreshes := events["refresh/refresh"]
	if len(refreshes) < 3 {
		t.Errorf("got %d refresh events, want at least 3", len(refreshes))
	}
	for i, event := range refreshes {
		if reason, _ := event["reason"].(string); !strings.HasPrefix(reason, "token ") {
			t.Errorf("refresh %d: reason = %q", i+1, reason)
		}
		checkExpiry("refresh", event)
	}

	only("revoked_token/token_rejected")
	relogin := only("revoked_token/relogin")
	if relogin["reason"] != "token rejected" {
		t.Errorf("re-login reason = %v, want token rejected", relogin["reason"])
	}
	resent := only("revoked_token/resent")
	if resent["server_logins"] != 1.0 || resent["server_requests"] != 2.0 {
		t.Errorf("revoked token cost %v logins and %v requests, want 1 and 2", resent["server_logins"], resent["server_requests"])
	}

	rejected := only("rejected_key/error")
	if rejected["unauthorized"] != true {
		t.Errorf("rejected key error does not match ErrUnauthorized: %v", rejected)
	}
	if msg, _ := rejected["error"].(string); !strings.Contains(msg, "API key rejected") {
		t.Errorf("rejected key error = %q, want it to say the API key was rejected", msg)
	}
	if logins := only("rejected_key/no_new_login")["server_logins"]; logins != 1.0 {
		t.Errorf("wrong key cost %v logins for 2 requests, want 1", logins)
	}

	claims := only("verified/claims")
	if claims["subject"] != login["account_id"] {
		t.Errorf("verified subject = %v, want the demo's account %v", claims["subject"], login["account_id"])
	}
	if audience, _ := claims["audience"].([]any); len(audience) != 1 || audience[0] != "norman:client" {
		t.Errorf("verified audience = %v, want [norman:client]", claims["audience"])
	}
	if issuer, _ := claims["issuer"].(string); !strings.HasPrefix(issuer, "http://127.0.0.1:") {
		t.Errorf("verified issuer = %v, want the demo server's base URL", claims["issuer"])
	}
	if _, err := time.Parse(time.RFC3339, claims["expires_at"].(string)); err != nil {
		t.Errorf("verified expires_at: %v", err)
	}
	if claims["jwks_requests"] != 1.0 {
		t.Errorf("verified login cost %v JWKS requests, want 1", claims["jwks_requests"])
	}

	summary := only("summary/logins")
	if refreshes, _ := summary["refreshes"].(float64); refreshes < 3 {
		t.Errorf("summary refreshes = %v, want at least 3", summary["refreshes"])
	}
	if summary["server_logins"] != summary["logins"].(float64)+summary["failed_logins"].(float64) {
		t.Errorf("summary: server logins %v, managers' logins %v and failures %v do not add up",
			summary["server_logins"], summary["logins"], summary["failed_logins"])
	}
	if unexpected := only("summary/finished")["unexpected"]; unexpected != 0.0 {
		t.Errorf("summary unexpected = %v, want 0", unexpected)
	}
}

func TestUsageErrors(t *testing.T) {
	clearEnvironment(t)
	keyFile := writeFile(t, t.TempDir(), "key", "nk-test-usage\n")

	tests := []struct {
		name      string
		args      []string
		wantError string // in stderr
	}{
		{"no command", nil, "missing command"},
		{"unknown command", []string{"nope"}, `unknown command "nope"`},
		{"unknown global flag", []string{"-nope", "demo"}, "flag provided but not defined: -nope"},
		{"unknown command flag", []string{"demo", "-nope"}, "flag provided but not defined: -nope"},
		{"help for unknown command", []string{"help", "nope"}, `unknown command "nope"`},
		{"demo argument", []string{"demo", "extra"}, `unexpected argument "extra"`},
		{"demo short lifetime", []string{"demo", "-lifetime", "1s"}, "invalid -lifetime 1s"},
		{"demo long lifetime", []string{"demo", "-lifetime", "11s"}, "invalid -lifetime 11s"},
		{"demo no lifetimes", []string{"demo", "-lifetimes", "0"}, "invalid -lifetimes 0"},
		{"get without path", []string{"get"}, "missing argument"},
		{"get two paths", []string{"get", "a", "b"}, `unexpected argument "b"`},
		{"get invalid header", []string{"get", "-H", "no colon", "a"}, "invalid header"},
		{"get absolute URL", []string{"-base-url", "http://127.0.0.1:1/v0", "-api-key-file", keyFile, "get", "https://example.com/x"}, "give a path relative to the base URL"},
		{"login without base URL", []string{"login"}, "missing base URL"},
		{"login invalid base URL", []string{"login", "-base-url", "ftp://host/v0"}, "invalid base URL"},
		{"login missing key file", []string{"login", "-base-url", "http://127.0.0.1:1/v0", "-api-key-file", filepath.Join(t.TempDir(), "none")}, "reading the API key file"},
		{"signup without name", []string{"signup", "-print-key"}, "missing -name"},
		{"signup without key destination", []string{"signup", "-name", "x"}, "missing -write-key FILE or -print-key"},
		{"serve write-key without account", []string{"serve", "-write-key", "k"}, "-write-key needs -account"},
		{"serve zero lifetime", []string{"serve", "-lifetime", "0s"}, "invalid -lifetime"},
		{"serve account without key", []string{"serve", "-account", "x"}, "-account needs an API key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runNorman(t, tt.args...)
			if res.code != exitUsage {
				t.Errorf("exit status %d, want %d\n%s", res.code, exitUsage, res)
			}
			if !strings.Contains(res.stderr, tt.wantError) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantError, res.stderr)
			}
			if !strings.Contains(res.stderr, "Usage:") {
				t.Errorf("stderr has no help:\n%s", res.stderr)
			}
			if !strings.Contains(res.stderr, "Exit status:") {
				t.Errorf("help does not list the exit statuses:\n%s", res.stderr)
			}
			if res.stdout != "" {
				t.Errorf("stdout = %q, want nothing", res.stdout)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	tests := [][]string{{"-h"}, {"help"}}
	for _, cmd := range commands {
		tests = append(tests, []string{cmd.name, "-h"}, []string{"help", cmd.name})
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			res := runNorman(t, args...)
			if res.code != exitOK {
				t.Errorf("exit status %d, want 0\n%s", res.code, res)
			}
			for _, want := range []string{"Usage:", "Exit status:", "3  authentication failed"} {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("help does not contain %q:\n%s", want, res.stderr)
				}
			}
		})
	}
}

func TestTopHelpListsCommands(t *testing.T) {
	res := runNorman(t, "-h")
	for _, cmd := range commands {
		if !strings.Contains(res.stderr, "  "+cmd.name+" ") {
			t.Errorf("help does not list %q:\n%s", cmd.name, res.stderr)
		}
	}
	for _, want := range []string{"-base-url", "-api-key-file", "NORMAN_BASE_URL", "NORMAN_API_KEY"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("help does not mention %s", want)
		}
	}
}

// startServer starts a test server with the account alice and returns it
// with alice's ID, key and key file, and sets NORMAN_BASE_URL to its URL.
func startServer(t *testing.T) (srv *normantest.Server, accountID, key, keyFile string) {
	t.Helper()
	clearEnvironment(t)
	srv = normantest.NewServer()
	t.Cleanup(srv.Close)
	key = "nk-test-alice-cli"
	accountID = srv.AddAccount("alice", key)
	keyFile = writeFile(t, t.TempDir(), "alice.key", "  "+key+"\n")
	t.Setenv("NORMAN_BASE_URL", srv.URL)
	return srv, accountID, key, keyFile
}

func TestTokenPrintsOnlyToken(t *testing.T) {
	srv, _, key, keyFile := startServer(t)

	res := runNorman(t, "token", "-api-key-file", keyFile)
	if res.code != exitOK {
		t.Fatalf("token failed:\n%s", res)
	}
	if !regexp.MustCompile(`^eyJ[A-Za-z0-9_.-]+\n$`).MatchString(res.stdout) {
		t.Errorf("stdout is not one JWT and a newline: %d bytes, %d lines", len(res.stdout), strings.Count(res.stdout, "\n"))
	}
	if res.stderr != "" {
		t.Errorf("stderr = %q, want nothing", res.stderr)
	}
	checkNoSecrets(t, res.stderr, key)

	req, err := http.NewRequest(http.MethodPost, srv.URL+"/authenticate/accounts/get", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(res.stdout))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the server returned %s for the printed token, want 200 OK", resp.Status)
	}
}

func TestTokenKeyFromEnvironment(t *testing.T) {
	_, _, key, _ := startServer(t)
	t.Setenv("NORMAN_API_KEY", key)

	res := runNorman(t, "token")
	if res.code != exitOK {
		t.Fatalf("token failed:\n%s", res)
	}
	if !jwtPattern.MatchString(res.stdout) {
		t.Errorf("stdout holds no JWT")
	}
}

func TestLoginPrintsAccountAndExpiry(t *testing.T) {
	_, accountID, key, keyFile := startServer(t)

	res := runNorman(t, "login", "-api-key-file", keyFile)
	if res.code != exitOK {
		t.Fatalf("login failed:\n%s", res)
	}
	if want := "Logged in as account " + accountID + ".\n"; !strings.Contains(res.stdout, want) {
		t.Errorf("stdout does not contain %q:\n%s", want, res.stdout)
	}
	if !regexp.MustCompile(`The access token expires at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, in (59m5\d|1h0m0)`).MatchString(res.stdout) {
		t.Errorf("stdout does not give the expiry of a one-hour token:\n%s", res.stdout)
	}
	checkNoSecrets(t, res.stdout+res.stderr, key)
}

func TestLoginVerboseAndRetries(t *testing.T) {
	srv, _, key, keyFile := startServer(t)
	srv.FailLogins(1, http.StatusServiceUnavailable)

	res := runNorman(t, "-v", "login", "-api-key-file", keyFile)
	if res.code != exitOK {
		t.Fatalf("login failed:\n%s", res)
	}
	for _, want := range []string{
		"norman: login attempt failed; retrying (attempt=1, status=503)",
		"norman: logged in (reason=no token",
	} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("stderr does not contain %q:\n%s", want, res.stderr)
		}
	}
	checkNoSecrets(t, res.stdout+res.stderr, key)
}

func TestGetRequests(t *testing.T) {
	srv, accountID, key, keyFile := startServer(t)
	srv.Handle("echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		json.NewEncoder(w).Encode(map[string]any{
			"method":       r.Method,
			"query":        r.URL.RawQuery,
			"demo":         r.Header.Values("X-Demo"),
			"accept":       r.Header.Get("Accept"),
			"content_type": r.Header.Get("Content-Type"),
			"bearer":       strings.HasPrefix(r.Header.Get("Authorization"), "Bearer eyJ"),
			"body":         string(body),
		})
	}))

	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // in stdout
		wantErr  string // in stderr
	}{
		{
			name:     "explicit POST",
			args:     []string{"get", "-api-key-file", keyFile, "-X", "POST", "authenticate/accounts/get"},
			wantCode: exitOK,
			wantOut:  `"id":"` + accountID + `"`,
			wantErr:  "HTTP/1.1 200 OK",
		},
		{
			name:     "body makes POST",
			args:     []string{"get", "-api-key-file", keyFile, "-d", "{}", "/authenticate/accounts/get"},
			wantCode: exitOK,
			wantOut:  `"name":"alice"`,
		},
		{
			name:     "base URL with trailing slash",
			args:     []string{"-base-url", srv.URL + "/", "get", "-api-key-file", keyFile, "-d", "{}", "authenticate/accounts/get"},
			wantCode: exitOK,
			wantOut:  `"name":"alice"`,
		},
		{
			name:     "default GET with query",
			args:     []string{"get", "-api-key-file", keyFile, "echo?limit=2&x=y"},
			wantCode: exitOK,
			wantOut:  `"accept":"application/json","bearer":true,"body":"","content_type":"","demo":null,"method":"GET","query":"limit=2\u0026x=y"`,
		},
		{
			name: "method headers and body",
			args: []string{"get", "-api-key-file", keyFile, "-X", "put", "-d", "hello",
				"-H", "X-Demo: one", "-H", "x-demo:two", "-H", "Accept: text/plain", "-H", "Authorization: Bearer mine", "echo"},
			wantCode: exitOK,
			wantOut:  `"accept":"text/plain","bearer":true,"body":"hello","content_type":"application/json","demo":["one","two"],"method":"PUT","query":""`,
		},
		{
			name:     "not found",
			args:     []string{"get", "-api-key-file", keyFile, "no/such/path"},
			wantCode: exitFailure,
			wantOut:  `{"detail":"Not Found"}`,
			wantErr:  "the server returned 404 Not Found",
		},
		{
			name:     "method not allowed",
			args:     []string{"get", "-api-key-file", keyFile, "authenticate/accounts/get"},
			wantCode: exitFailure,
			wantErr:  "HTTP/1.1 405 Method Not Allowed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runNorman(t, tt.args...)
			if res.code != tt.wantCode {
				t.Errorf("exit status %d, want %d\n%s", res.code, tt.wantCode, res)
			}
			if !strings.Contains(res.stdout, tt.wantOut) {
				t.Errorf("stdout does not contain %s:\n%s", tt.wantOut, res.stdout)
			}
			if !strings.Contains(res.stderr, tt.wantErr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantErr, res.stderr)
			}
			checkNoSecrets(t, res.stdout+res.stderr, key)
		})
	}
}

func TestRejectedKeyExitsThree(t *testing.T) {
	srv, _, _, _ := startServer(t)
	dir := t.TempDir()
	wrongKey := "nk-test-wrong-cli"
	wrongFile := writeFile(t, dir, "wrong.key", wrongKey+"\n")
	revokedKey := "nk-test-revoked-cli"
	srv.AddAccount("revoked", revokedKey)
	srv.RevokeAPIKey(revokedKey)
	revokedFile := writeFile(t, dir, "revoked.key", revokedKey)

	for _, keyFile := range []string{wrongFile, revokedFile} {
		for _, args := range [][]string{
			{"login", "-api-key-file", keyFile},
			{"token", "-api-key-file", keyFile},
			{"get", "-api-key-file", keyFile, "-d", "{}", "authenticate/accounts/get"},
		} {
			t.Run(filepath.Base(keyFile)+" "+args[0], func(t *testing.T) {
				res := runNorman(t, args...)
				if res.code != exitAuthFailed {
					t.Errorf("exit status %d, want %d\n%s", res.code, exitAuthFailed, res)
				}
				if want := "norman " + args[0] + ": "; !strings.HasPrefix(res.stderr, want) {
					t.Errorf("stderr does not start with %q:\n%s", want, res.stderr)
				}
				if !strings.Contains(res.stderr, "API key rejected") {
					t.Errorf("stderr does not say the key was rejected:\n%s", res.stderr)
				}
				if strings.Count(res.stderr, "\n") != 1 {
					t.Errorf("stderr has %d lines, want 1:\n%s", strings.Count(res.stderr, "\n"), res.stderr)
				}
				if res.stdout != "" {
					t.Errorf("stdout = %q, want nothing", res.stdout)
				}
				checkNoSecrets(t, res.stderr, wrongKey, revokedKey)
			})
		}
	}
}

func TestMissingKeyExitsThree(t *testing.T) {
	_, _, _, _ = startServer(t)
	emptyFile := writeFile(t, t.TempDir(), "empty.key", " \n")

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no key login", []string{"login"}, "no API key: set NORMAN_API_KEY or pass -api-key-file FILE"},
		{"no key token", []string{"token"}, "no API key"},
		{"no key get", []string{"get", "x"}, "no API key"},
		{"empty key file", []string{"login", "-api-key-file", emptyFile}, "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runNorman(t, tt.args...)
			if res.code != exitAuthFailed {
				t.Errorf("exit status %d, want %d\n%s", res.code, exitAuthFailed, res)
			}
			if !strings.Contains(res.stderr, tt.want) {
				t.Errorf("stderr does not contain %q:\n%s", tt.want, res.stderr)
			}
		})
	}
}

func TestSignupWritesKeyFile(t *testing.T) {
	srv, _, _, _ := startServer(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "bob.key")

	res := runNorman(t, "signup", "-name", "bob", "-write-key", keyFile)
	if res.code != exitOK {
		t.Fatalf("signup failed:\n%s", res)
	}
	if !regexp.MustCompile(`^Signed up account "bob" with ID [0-9a-f]+, created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\.\n`).MatchString(res.stdout) {
		t.Errorf("stdout does not describe the account:\n%s", res.stdout)
	}
	if !strings.Contains(res.stdout, "Wrote its API key to "+keyFile) {
		t.Errorf("stdout does not name the key file:\n%s", res.stdout)
	}
	checkNoSecrets(t, res.stdout+res.stderr)

	info, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o600 {
		t.Errorf("key file permissions = %v, want 0600", info.Mode().Perm())
	}
	data, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^nk-test-[0-9a-f]+\n$`).Match(data) {
		t.Errorf("key file does not hold one key and a newline (%d bytes)", len(data))
	}

	if res := runNorman(t, "login", "-api-key-file", keyFile); res.code != exitOK {
		t.Errorf("login with the new key failed:\n%s", res)
	}

	signups := srv.Signups()
	res = runNorman(t, "signup", "-name", "bob2", "-write-key", keyFile)
	if res.code != exitUsage {
		t.Errorf("signup over an existing key file: exit status %d, want %d\n%s", res.code, exitUsage, res)
	}
	if !strings.Contains(res.stderr, "already exists") {
		t.Errorf("stderr does not say the file exists:\n%s", res.stderr)
	}
	if srv.Signups() != signups {
		t.Errorf("signup reached the server although the key file exists")
	}
	if again, _ := os.ReadFile(keyFile); !bytes.Equal(again, data) {
		t.Errorf("the existing key file was changed")
	}
}

func TestSignupFailureRemovesKeyFile(t *testing.T) {
	srv, _, _, _ := startServer(t)
	srv.AddAccount("taken", "nk-test-taken")
	keyFile := filepath.Join(t.TempDir(), "taken.key")

	res := runNorman(t, "signup", "-name", "taken", "-write-key", keyFile)
	if res.code != exitFailure {
		t.Errorf("exit status %d, want %d\n%s", res.code, exitFailure, res)
	}
	if !strings.Contains(res.stderr, "409 Conflict") {
		t.Errorf("stderr does not give the status:\n%s", res.stderr)
	}
	if _, err := os.Stat(keyFile); !os.IsNotExist(err) {
		t.Errorf("key file left behind after a failed signup: %v", err)
	}
}

func TestSignupPrintKey(t *testing.T) {
	_, _, _, _ = startServer(t)

	res := runNorman(t, "signup", "-name", "carol", "-print-key")
	if res.code != exitOK {
		t.Fatalf("signup failed:\n%s", res)
	}
	if !regexp.MustCompile(`\nAPI key: nk-test-[0-9a-f]+\n$`).MatchString(res.stdout) {
		t.Errorf("stdout does not end in the key:\n%s", res.stdout)
	}
}

// lockedBuffer is a bytes.Buffer that a command writes to while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestServeUntilCanceled(t *testing.T) {
	clearEnvironment(t)
	keyFile := filepath.Join(t.TempDir(), "dave.key")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr lockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "-account", "dave", "-write-key", keyFile, "-lifetime", "3s"}, &stdout, &stderr)
	}()

	baseLine := regexp.MustCompile(`^Base URL: (http://127\.0\.0\.1:\d+/v0)\n`)
	var baseURL string
	for deadline := time.Now().Add(10 * time.Second); baseURL == "" || !strings.Contains(stdout.String(), "Stop the server"); {
		if time.Now().After(deadline) {
			t.Fatalf("serve printed no base URL within 10s:\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		if m := baseLine.FindStringSubmatch(stdout.String()); m != nil {
			baseURL = m[1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{
		"each access token it issues is valid for 3s",
		`Account "dave" (ID `,
		"logs in with the API key in the new file " + keyFile,
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout does not contain %q:\n%s", want, stdout.String())
		}
	}

	info, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o600 {
		t.Errorf("key file permissions = %v, want 0600", info.Mode().Perm())
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}

	res := runNorman(t, "-base-url", baseURL, "login", "-api-key-file", keyFile)
	if res.code != exitOK {
		t.Errorf("login against serve failed:\n%s", res)
	}
	if !regexp.MustCompile(`, in (2(\.\d+)?|3)s\.\n`).MatchString(res.stdout) {
		t.Errorf("login does not show a token lifetime of at most 3s:\n%s", res.stdout)
	}

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("serve: exit status %d, want 0\nstderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not stop within 10s of the cancellation")
	}
	if want := "Stopped the server after 0 signups, 1 login and 0 authenticated requests.\n"; !strings.HasSuffix(stdout.String(), want) {
		t.Errorf("stdout does not end with %q:\n%s", want, stdout.String())
	}
	checkNoSecrets(t, stdout.String()+stderr.String(), strings.TrimSpace(string(key)))
}

func TestServeAccountFromEnvironment(t *testing.T) {
	clearEnvironment(t)
	t.Setenv("NORMAN_API_KEY", "nk-test-erin")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // serve returns as soon as it has started

	res := result{}
	var stdout, stderr bytes.Buffer
	res.code = run(ctx, []string{"serve", "-account", "erin"}, &stdout, &stderr)
	res.stdout, res.stderr = stdout.String(), stderr.String()
	if res.code != exitOK {
		t.Fatalf("serve failed:\n%s", res)
	}
	if !strings.Contains(res.stdout, "logs in with the API key in $NORMAN_API_KEY.") {
		t.Errorf("stdout does not name the key's source:\n%s", res.stdout)
	}
	checkNoSecrets(t, res.stdout+res.stderr, "nk-test-erin")
}

func TestJoinPath(t *testing.T) {
	tests := []struct {
		base, path, want string
	}{
		{"https://api.example.com/v0", "authenticate/accounts/get", "https://api.example.com/v0/authenticate/accounts/get"},
		{"https://api.example.com/v0/", "authenticate/accounts/get", "https://api.example.com/v0/authenticate/accounts/get"},
		{"https://api.example.com/v0", "/authenticate/accounts/get", "https://api.example.com/v0/authenticate/accounts/get"},
		{"https://api.example.com/v0/", "/a?b=c&d=e", "https://api.example.com/v0/a?b=c&d=e"},
		{"https://api.example.com", "a", "https://api.example.com/a"},
		{"http://127.0.0.1:8080/v0", "files/a%2Fb", "http://127.0.0.1:8080/v0/files/a%2Fb"},
	}
	for _, tt := range tests {
		got, err := joinPath(tt.base, tt.path)
		if err != nil {
			t.Errorf("joinPath(%q, %q): %v", tt.base, tt.path, err)
			continue
		}
		if got != tt.want {
			t.Errorf("joinPath(%q, %q) = %q, want %q", tt.base, tt.path, got, tt.want)
		}
	}

	for _, path := range []string{"https://other.example.com/x", "//other.example.com/x"} {
		if _, err := joinPath("https://api.example.com/v0", path); err == nil {
			t.Errorf("joinPath accepted the absolute URL %q", path)
		}
	}
}
