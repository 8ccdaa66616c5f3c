package norman

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/norman-ml/norman-go/normantest"
)

// signupTestKey is the fake API key that the test signup servers issue.
const signupTestKey = "nk-test-signup-9d2e4f7a1b6c"

var signupTestSecrets = map[string]string{"the API key": signupTestKey}

// signupRequest is one request that a signupServer received.
type signupRequest struct {
	method, path string
	header       http.Header
	body         string
}

// signupServer is a loopback server that records signup requests and
// responds to each with a fixed status, Content-Type and body.
type signupServer struct {
	*httptest.Server
	status      int
	contentType string
	body        string

	mu       sync.Mutex
	requests []signupRequest
}

func newSignupServer(t *testing.T, status int, contentType, body string) *signupServer {
	t.Helper()
	s := &signupServer{status: status, contentType: contentType, body: body}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("reading the signup request body: %v", err)
		}
		s.mu.Lock()
		s.requests = append(s.requests, signupRequest{method: r.Method, path: r.URL.Path, header: r.Header.Clone(), body: string(data)})
		s.mu.Unlock()

		w.Header().Set("Content-Type", s.contentType)
		w.WriteHeader(s.status)
		_, _ = io.WriteString(w, s.body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *signupServer) received() []signupRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]signupRequest(nil), s.requests...)
}

// signupOptions returns the options for a signup against s with base as
// the path of the base URL.
func (s *signupServer) signupOptions(base string) []Option {
	return []Option{
		WithBaseURL(s.URL + base),
		WithHTTPClient(s.Client()),
		WithLogger(slog.New(slog.DiscardHandler)),
	}
}

// signupBody returns a signup response body with creationTime written as
// raw JSON, such as `"2024-05-01T12:30:00Z"` or `null`.
func signupBody(creationTime string) string {
	return `{"account":{"id":"acct-42","creation_time":` + creationTime + `,"name":"alice"},"api_key":"` + signupTestKey + `"}`
}

func TestSignupAndGenerateKeyRequest(t *testing.T) {
	t.Parallel()

	for _, base := range []string{"/v0", "/v0/"} {
		t.Run("base "+base, func(t *testing.T) {
			t.Parallel()
			srv := newSignupServer(t, http.StatusOK, "application/json", signupBody(`"2024-05-01T12:30:00.123456Z"`))

			got, err := SignupAndGenerateKey(t.Context(), "alice", srv.signupOptions(base)...)
			if err != nil {
				t.Fatalf("SignupAndGenerateKey: %v", err)
			}

			requests := srv.received()
			if len(requests) != 1 {
				t.Fatalf("server received %d requests, want 1", len(requests))
			}
			req := requests[0]
			if req.method != http.MethodPut {
				t.Errorf("method = %s, want PUT", req.method)
			}
			if want := "/v0/authenticate/signup/key"; req.path != want {
				t.Errorf("path = %q, want %q", req.path, want)
			}
			for _, name := range []string{"Content-Type", "Accept"} {
				if got := req.header.Values(name); len(got) != 1 || got[0] != "application/json" {
					t.Errorf("%s header = %q, want [application/json]", name, got)
				}
			}
			if got := req.header.Values("Authorization"); len(got) != 0 {
				t.Errorf("signup request has %d Authorization headers, want none", len(got))
			}
			if want := `{"name":"alice","device_id":null}`; req.body != want {
				t.Errorf("body = %s, want %s", req.body, want)
			}

			if got.APIKey.Value() != signupTestKey {
				t.Error("APIKey.Value() is not the key from the response")
			}
			wantAccount := Account{ID: "acct-42", Name: "alice", CreationTime: time.Date(2024, 5, 1, 12, 30, 0, 123456000, time.UTC)}
			if got.Account.ID != wantAccount.ID || got.Account.Name != wantAccount.Name || !got.Account.CreationTime.Equal(wantAccount.CreationTime) {
				t.Errorf("Account = %+v, want %+v", got.Account, wantAccount)
			}
		})
	}
}

func TestSignupAndGenerateKeyTrimsUsername(t *testing.T) {
	t.Parallel()

	srv := newSignupServer(t, http.StatusOK, "application/json", signupBody(`null`))
	if _, err := SignupAndGenerateKey(t.Context(), "  alice\t\n", srv.signupOptions("/v0")...); err != nil {
		t.Fatalf("SignupAndGenerateKey: %v", err)
	}
	requests := srv.received()
	if len(requests) != 1 {
		t.Fatalf("server received %d requests, want 1", len(requests))
	}
	if want := `{"name":"alice","device_id":null}`; requests[0].body != want {
		t.Errorf("body = %s, want %s", requests[0].body, want)
	}
}

func TestSignupAndGenerateKeyTrimsAPIKey(t *testing.T) {
	t.Parallel()

	body := `{"account":{"id":"acct-42","creation_time":null,"name":"alice"},"api_key":"  ` + signupTestKey + `\n"}`
	srv := newSignupServer(t, http.StatusOK, "application/json", body)
	got, err := SignupAndGenerateKey(t.Context(), "alice", srv.signupOptions("/v0")...)
	if err != nil {
		t.Fatalf("SignupAndGenerateKey: %v", err)
	}
	if got.APIKey.Value() != signupTestKey {
		t.Error("APIKey.Value() is not the response's key without surrounding whitespace")
	}
}

func TestSignupAccountCreationTime(t *testing.T) {
	t.Parallel()

	utc := func(nsec int) time.Time { return time.Date(2024, 5, 1, 12, 30, 15, nsec, time.UTC) }
	cases := []struct {
		raw     string // the JSON value of creation_time
		want    time.Time
		wantUTC bool // the time has no zone, so the location must be UTC
	}{
		{raw: `"2024-05-01T12:30:15Z"`, want: utc(0)},
		{raw: `"2024-05-01T12:30:15+00:00"`, want: utc(0)},
		{raw: `"2024-05-01T14:30:15+02:00"`, want: utc(0)},
		{raw: `"2024-05-01T07:00:15-05:30"`, want: utc(0)},
		{raw: `"2024-05-01T12:30:15"`, want: utc(0), wantUTC: true},
		{raw: `"2024-05-01T12:30:15.1"`, want: utc(100000000), wantUTC: true},
		{raw: `"2024-05-01T12:30:15.12Z"`, want: utc(120000000)},
		{raw: `"2024-05-01T12:30:15.123Z"`, want: utc(123000000)},
		{raw: `"2024-05-01T12:30:15.1234Z"`, want: utc(123400000)},
		{raw: `"2024-05-01T12:30:15.12345Z"`, want: utc(123450000)},
		{raw: `"2024-05-01T12:30:15.123456Z"`, want: utc(123456000)},
		{raw: `"2024-05-01T12:30:15.000001"`, want: utc(1000), wantUTC: true},
		{raw: `"2024-05-01T14:30:15.123456+02:00"`, want: utc(123456000)},
		{raw: `"2024-05-01 12:30:15"`, want: utc(0), wantUTC: true},
		{raw: `"2024-05-01 12:30:15.654321"`, want: utc(654321000), wantUTC: true},
		{raw: `"2024-05-01 12:30:15Z"`, want: utc(0)},
		{raw: `"2024-05-01 14:30:15.5+02:00"`, want: utc(500000000)},
		{raw: `null`, want: time.Time{}},
		{raw: `""`, want: time.Time{}},
	}
	for _, tc := range cases {
		t.Run(tc.raw, func(t *testing.T) {
			t.Parallel()
			srv := newSignupServer(t, http.StatusOK, "application/json", signupBody(tc.raw))
			got, err := SignupAndGenerateKey(t.Context(), "alice", srv.signupOptions("/v0")...)
			if err != nil {
				t.Fatalf("SignupAndGenerateKey: %v", err)
			}
			if !got.Account.CreationTime.Equal(tc.want) {
				t.Errorf("CreationTime = %s, want %s", got.Account.CreationTime.Format(time.RFC3339Nano), tc.want.Format(time.RFC3339Nano))
			}
			if tc.want.IsZero() && !got.Account.CreationTime.IsZero() {
				t.Errorf("CreationTime.IsZero() = false, want true")
			}
			if tc.wantUTC && got.Account.CreationTime.Location() != time.UTC {
				t.Errorf("CreationTime location = %s, want UTC for a time without a zone", got.Account.CreationTime.Location())
			}
		})
	}

	t.Run("missing", func(t *testing.T) {
		t.Parallel()
		srv := newSignupServer(t, http.StatusOK, "application/json", `{"account":{"id":"acct-42","name":"alice"},"api_key":"`+signupTestKey+`"}`)
		got, err := SignupAndGenerateKey(t.Context(), "alice", srv.signupOptions("/v0")...)
		if err != nil {
			t.Fatalf("SignupAndGenerateKey: %v", err)
		}
		if !got.Account.CreationTime.IsZero() {
			t.Errorf("CreationTime = %s, want the zero time", got.Account.CreationTime)
		}
	})
}

func TestSignupAccountCreationTimeInvalid(t *testing.T) {
	t.Parallel()

	for _, raw := range []string{
		`"yesterday"`,
		`"2024-13-01T12:30:15Z"`,
		`"2024-05-01T25:30:15"`,
		`"2024-05-01"`,
		`"1714566615"`,
		`1714566615`,
		`"2024-05-01T12:30:15+2"`,
		`{"seconds":1714566615}`,
	} {
		t.Run(raw, func(t *testing.T) {
			t.Parallel()
			srv := newSignupServer(t, http.StatusOK, "application/json", signupBody(raw))
			got, err := SignupAndGenerateKey(t.Context(), "alice", srv.signupOptions("/v0")...)
			if err == nil {
				t.Fatalf("SignupAndGenerateKey returned account %+v, want an error for creation_time %s", got.Account, raw)
			}
			checkNoSecret(t, "error", err.Error(), signupTestSecrets)
		})
	}
}

func TestSignupAndGenerateKeyInvalidUsername(t *testing.T) {
	t.Parallel()

	for _, username := range []string{"", " ", "\t\r\n", "al\x00ice", "alice\x1b[31m"} {
		t.Run(fmt.Sprintf("%q", username), func(t *testing.T) {
			t.Parallel()
			srv := newSignupServer(t, http.StatusOK, "application/json", signupBody(`null`))
			got, err := SignupAndGenerateKey(t.Context(), username, srv.signupOptions("/v0")...)
			if err == nil {
				t.Fatalf("SignupAndGenerateKey returned account %q, want an error", got.Account.Name)
			}
			if !strings.Contains(err.Error(), "username") {
				t.Errorf("error = %q, want it to name the username", err)
			}
			if n := len(srv.received()); n != 0 {
				t.Errorf("server received %d requests, want none", n)
			}
		})
	}
}

func TestSignupAndGenerateKeyAPIError(t *testing.T) {
	t.Parallel()

	cases := []struct {
		name        string
		status      int
		contentType string
		body        string
		wantMessage string
	}{
		{
			name:        "Norman error object",
			status:      http.StatusConflict,
			contentType: "application/json",
			body:        `{"status_code":409,"error_type":"Conflict","message":"Account name already taken","cause":"An account named alice exists.","suggestions":["Sign up with another name."]}`,
			wantMessage: "Account name already taken",
		},
		{
			name:        "FastAPI detail",
			status:      http.StatusUnprocessableEntity,
			contentType: "application/json",
			body:        `{"detail":"The field name must be a non-empty string."}`,
			wantMessage: "The field name must be a non-empty string.",
		},
		{
			name:        "HTML from a proxy",
			status:      http.StatusBadGateway,
			contentType: "text/html",
			body:        "<html><body><h1>502 Bad Gateway</h1></body></html>",
			wantMessage: "<html><body><h1>502 Bad Gateway</h1></body></html>",
		},
		{
			name:        "empty body",
			status:      http.StatusInternalServerError,
			contentType: "text/plain",
		},
		{
			name:        "redirect",
			status:      http.StatusTemporaryRedirect,
			contentType: "text/plain",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newSignupServer(t, tc.status, tc.contentType, tc.body)
			_, err := SignupAndGenerateKey(t.Context(), "alice", srv.signupOptions("/v0")...)

			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error = %v, want an *APIError", err)
			}
			if apiErr.StatusCode != tc.status {
				t.Errorf("StatusCode = %d, want %d", apiErr.StatusCode, tc.status)
			}
			if apiErr.Method != http.MethodPut {
				t.Errorf("Method = %s, want PUT", apiErr.Method)
			}
			if want := srv.URL + "/v0/authenticate/signup/key"; apiErr.URL != want {
				t.Errorf("URL = %q, want %q", apiErr.URL, want)
			}
			if apiErr.Message != tc.wantMessage {
				t.Errorf("Message = %q, want %q", apiErr.Message, tc.wantMessage)
			}
			if errors.Is(err, ErrUnauthorized) {
				t.Error("errors.Is(err, ErrUnauthorized) = true for a signup error, want false")
			}
			if n := len(srv.received()); n != 1 {
				t.Errorf("server received %d requests, want exactly 1 (signups are never retried)", n)
			}
		})
	}
}

func TestSignupAndGenerateKeyInvalidResponse(t *testing.T) {
	t.Parallel()

	cases := []struct {
		name        string
		contentType string
		body        string
		wantInError string
	}{
		{name: "HTML with status 200", contentType: "text/html; charset=utf-8", body: "<!DOCTYPE html><html><body>Sign in to the proxy</body></html>", wantInError: "text/html"},
		{name: "plain text", contentType: "text/plain", body: "ok", wantInError: "invalid response"},
		{name: "empty body", contentType: "application/json", body: "", wantInError: "invalid response"},
		{name: "JSON array", contentType: "application/json", body: `[]`, wantInError: "invalid response"},
		{name: "api_key missing", contentType: "application/json", body: `{"account":{"id":"acct-42","name":"alice"}}`, wantInError: "api_key"},
		{name: "api_key null", contentType: "application/json", body: `{"account":null,"api_key":null}`, wantInError: "api_key"},
		{name: "api_key empty", contentType: "application/json", body: `{"api_key":""}`, wantInError: "api_key"},
		{name: "api_key whitespace", contentType: "application/json", body: `{"api_key":"  \t "}`, wantInError: "api_key"},
		{name: "api_key number", contentType: "application/json", body: `{"api_key":80417263549}`, wantInError: "invalid response"},
		{name: "api_key with control character", contentType: "application/json", body: `{"api_key":"` + signupTestKey + `\u0007"}`, wantInError: "API key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newSignupServer(t, http.StatusOK, tc.contentType, tc.body)
			got, err := SignupAndGenerateKey(t.Context(), "alice", srv.signupOptions("/v0")...)
			if err == nil {
				t.Fatalf("SignupAndGenerateKey returned account %+v, want an error", got.Account)
			}
			if !strings.Contains(err.Error(), tc.wantInError) {
				t.Errorf("error = %q, want it to contain %q", maskSecrets(err.Error(), signupTestSecrets), tc.wantInError)
			}
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				t.Errorf("error is an *APIError for status 200, want a response error")
			}
			checkNoSecret(t, "error", err.Error(), map[string]string{"the API key": signupTestKey, "the number": "80417263549"})
		})
	}
}

func TestSignupAndGenerateKeyBaseURL(t *testing.T) {
	t.Parallel()

	never := &http.Client{Transport: noSendTransport{t}}
	cases := []struct {
		name    string
		baseURL string
		wantErr func(error) bool
	}{
		{name: "empty", baseURL: "", wantErr: func(err error) bool { return errors.Is(err, ErrNoBaseURL) }},
		{name: "whitespace", baseURL: "  ", wantErr: func(err error) bool { return errors.Is(err, ErrNoBaseURL) }},
		{name: "plain HTTP to a remote host", baseURL: "http://api.norman.invalid/v0", wantErr: func(err error) bool { return errors.Is(err, ErrInsecureURL) }},
		{name: "plain HTTP to a name that is not localhost", baseURL: "http://127.0.0.1.norman.invalid/v0", wantErr: func(err error) bool { return errors.Is(err, ErrInsecureURL) }},
		{name: "unsupported scheme", baseURL: "ftp://api.norman.invalid/v0", wantErr: func(err error) bool { return errors.As(err, new(*configError)) }},
		{name: "user info", baseURL: "https://alice:" + signupTestKey + "@api.norman.invalid/v0", wantErr: func(err error) bool { return errors.As(err, new(*configError)) }},
		{name: "query", baseURL: "https://api.norman.invalid/v0?key=" + signupTestKey, wantErr: func(err error) bool { return errors.As(err, new(*configError)) }},
		{name: "relative", baseURL: "/v0", wantErr: func(err error) bool { return errors.As(err, new(*configError)) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := SignupAndGenerateKey(t.Context(), "alice", WithBaseURL(tc.baseURL), WithHTTPClient(never))
			if err == nil || !tc.wantErr(err) {
				t.Fatalf("error = %v, want the base URL error", maskSecrets(fmt.Sprint(err), signupTestSecrets))
			}
			checkNoSecret(t, "error", err.Error(), signupTestSecrets)
			if retry, _ := CheckRetry(t.Context(), nil, err); retry {
				t.Errorf("CheckRetry retry = true for %v, want false", err)
			}
		})
	}
}

// TestSignupAndGenerateKeyEnvironment changes the environment, so it and its
// subtests do not run in parallel.
func TestSignupAndGenerateKeyEnvironment(t *testing.T) {
	t.Run("base URL from environment", func(t *testing.T) {
		srv := newSignupServer(t, http.StatusOK, "application/json", signupBody(`null`))
		t.Setenv(EnvBaseURL, srv.URL+"/v0")
		got, err := SignupAndGenerateKey(t.Context(), "alice", WithHTTPClient(srv.Client()), WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatalf("SignupAndGenerateKey: %v", err)
		}
		if got.Account.Name != "alice" {
			t.Errorf("Account.Name = %q, want alice", got.Account.Name)
		}
	})

	t.Run("no base URL in environment", func(t *testing.T) {
		t.Setenv(EnvBaseURL, "")
		_, err := SignupAndGenerateKey(t.Context(), "alice", WithHTTPClient(&http.Client{Transport: noSendTransport{t}}))
		if !errors.Is(err, ErrNoBaseURL) {
			t.Errorf("error = %v, want ErrNoBaseURL", err)
		}
	})

	t.Run("option overrides environment", func(t *testing.T) {
		srv := newSignupServer(t, http.StatusOK, "application/json", signupBody(`null`))
		t.Setenv(EnvBaseURL, "http://api.norman.invalid/v0")
		if _, err := SignupAndGenerateKey(t.Context(), "alice", srv.signupOptions("/v0")...); err != nil {
			t.Errorf("SignupAndGenerateKey: %v", err)
		}
	})
}

func TestSignupAndGenerateKeyCanceledContext(t *testing.T) {
	t.Parallel()

	srv := newSignupServer(t, http.StatusOK, "application/json", signupBody(`null`))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := SignupAndGenerateKey(ctx, "alice", srv.signupOptions("/v0")...)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", err)
	}
	if n := len(srv.received()); n != 0 {
		t.Errorf("server received %d requests, want none", n)
	}
}

func TestSignupAndGenerateKeyLogsNoKey(t *testing.T) {
	t.Parallel()

	srv := newSignupServer(t, http.StatusOK, "application/json", signupBody(`"2024-05-01T12:30:15Z"`))
	var logs strings.Builder
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, err := SignupAndGenerateKey(t.Context(), "alice", WithBaseURL(srv.URL+"/v0"), WithHTTPClient(srv.Client()), WithLogger(logger)); err != nil {
		t.Fatalf("SignupAndGenerateKey: %v", err)
	}
	checkNoSecret(t, "log output", logs.String(), map[string]string{"the API key": signupTestKey})
	if !strings.Contains(logs.String(), "acct-42") {
		t.Errorf("log output = %s, want a record with the account id", logs.String())
	}
}

func TestSignupThenLoginWithNormantest(t *testing.T) {
	t.Parallel()

	srv := normantest.NewServer()
	t.Cleanup(srv.Close)

	signup, err := SignupAndGenerateKey(t.Context(), "alice", WithBaseURL(srv.URL), WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatalf("SignupAndGenerateKey: %v", err)
	}
	if signup.Account.Name != "alice" {
		t.Errorf("Account.Name = %q, want alice", signup.Account.Name)
	}
	if signup.Account.ID == "" {
		t.Error("Account.ID is empty")
	}
	if age := time.Since(signup.Account.CreationTime); age < -time.Minute || age > time.Minute {
		t.Errorf("Account.CreationTime = %s, want about now", signup.Account.CreationTime)
	}
	if !strings.HasPrefix(signup.APIKey.Value(), "nk-test-") {
		t.Error("APIKey does not have the nk-test- prefix of normantest keys")
	}

	mgr := NewManager(
		WithBaseURL(srv.URL),
		WithAPIKey(signup.APIKey.Value()),
		WithHTTPClient(srv.Client()),
		WithLogger(slog.New(slog.DiscardHandler)),
	)
	if _, err := mgr.Token(t.Context()); err != nil {
		t.Fatalf("Token with the new key: %v", err)
	}
	if got := mgr.AccountID(); got != signup.Account.ID {
		t.Errorf("AccountID() = %q, want the signed-up account %q", got, signup.Account.ID)
	}

	client := &http.Client{Transport: NewTransport(mgr, srv.Client().Transport)}
	resp, err := client.Post(srv.URL+"/authenticate/accounts/get", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatalf("POST authenticate/accounts/get: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST authenticate/accounts/get status = %d, want 200", resp.StatusCode)
	}
	var accounts map[string]Account
	if err := json.NewDecoder(resp.Body).Decode(&accounts); err != nil {
		t.Fatalf("decoding the accounts: %v", err)
	}
	got, ok := accounts[signup.Account.ID]
	if !ok || got.Name != "alice" || !got.CreationTime.Equal(signup.Account.CreationTime) {
		t.Errorf("accounts = %+v, want the signed-up account %+v", accounts, signup.Account)
	}

	if got := srv.Signups(); got != 1 {
		t.Errorf("server signups = %d, want 1", got)
	}
	if got := srv.Logins(); got != 1 {
		t.Errorf("server logins = %d, want 1", got)
	}
}
