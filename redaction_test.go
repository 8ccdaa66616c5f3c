package norman

import (
	"bytes"
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
)

// Fake API keys of the redaction tests. The server accepts the first, fails
// logins with the others, and echoes every key it receives in its error
// bodies, as a careless server might.
const (
	redactionValidKey    = "nk-test-redaction-valid-6e1b93c0"
	redactionRejectedKey = "nk-test-redaction-rejected-47ad2e"
	redactionBrokenKey   = "nk-test-redaction-broken-b85f17"
	redactionInvalidKey  = "nk-test-redaction-invalid-c3096a"
	redactionSignupKey   = "nk-test-redaction-signup-0f5d8b"
)

// redactionServer is a loopback Norman server for the redaction tests. It
// issues fake JWTs, echoes API keys in error bodies, and serves an
// authenticated endpoint at /v0/echo.
type redactionServer struct {
	*httptest.Server

	mu     sync.Mutex
	issued []string // every access and ID token issued
	logins int
}

func newRedactionServer(t *testing.T) *redactionServer {
	t.Helper()
	s := &redactionServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v0/authenticate/login/key", s.serveLogin)
	mux.HandleFunc("PUT /v0/authenticate/signup/key", func(w http.ResponseWriter, r *http.Request) {
		writeRedactionJSON(w, http.StatusOK, `{"account":{"id":"acct-signup","creation_time":"2024-05-01T12:30:15.5Z","name":"bob"},"api_key":"`+redactionSignupKey+`"}`)
	})
	mux.HandleFunc("POST /v0/echo", s.serveEcho)
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func writeRedactionJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

func (s *redactionServer) serveLogin(w http.ResponseWriter, r *http.Request) {
	var request struct {
		APIKey string `json:"api_key"`
	}
	if err := json.NewDecoder(r.Body).Decode(&request); err != nil {
		writeRedactionJSON(w, http.StatusUnprocessableEntity, `{"detail":"invalid JSON"}`)
		return
	}
	key := request.APIKey

	s.mu.Lock()
	s.logins++
	n := s.logins
	s.mu.Unlock()

	switch key {
	case redactionValidKey:
		now := time.Now().Unix()
		access := encodeTestJWT(jwtHeaderHS256, fmt.Sprintf(`{"sub":"acct-redaction","iat":%d,"exp":%d,"jti":"access-%d"}`, now, now+3600, n), "YWNjZXNzLXNpZ25hdHVyZQ")
		id := encodeTestJWT(jwtHeaderHS256, fmt.Sprintf(`{"sub":"acct-redaction","iat":%d,"exp":%d,"jti":"id-%d","name":"alice"}`, now, now+3600, n), "aWQtc2lnbmF0dXJl")
		s.mu.Lock()
		s.issued = append(s.issued, access, id)
		s.mu.Unlock()
		writeRedactionJSON(w, http.StatusOK, `{"account":{"id":"acct-redaction","creation_time":"2024-05-01T12:30:15Z","name":"alice"},"access_token":"`+access+`","id_token":"`+id+`"}`)
	case redactionBrokenKey:
		writeRedactionJSON(w, http.StatusInternalServerError, `{"status_code":500,"error_type":"Internal Server Error: `+key+`","message":"Lookup of key `+key+` failed.","cause":"database timeout for `+key+`","suggestions":["Retry with `+key+` later."]}`)
	case redactionInvalidKey:
		writeRedactionJSON(w, http.StatusUnprocessableEntity, `{"detail":[{"type":"string_pattern_mismatch","loc":["body","api_key"],"msg":"String should match pattern","input":"`+key+`"}]}`)
	default:
		writeRedactionJSON(w, http.StatusUnauthorized, `{"status_code":401,"error_type":"Unauthorized","message":"The API key `+key+` is not valid.","cause":"No account has the key `+key+`.","suggestions":["Check `+key+`."]}`)
	}
}

// serveEcho returns status 200 for requests that carry an issued access
// token. It rejects other requests, and every request with the header
// "X-Reject: yes", with status 401 and a body that echoes the token.
func (s *redactionServer) serveEcho(w http.ResponseWriter, r *http.Request) {
	token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	known := false
	for _, issued := range s.issued {
		known = known || issued == token
	}
	s.mu.Unlock()

	if !known || r.Header.Get("X-Reject") == "yes" {
		writeRedactionJSON(w, http.StatusUnauthorized, `{"detail":"invalid token `+token+`"}`)
		return
	}
	writeRedactionJSON(w, http.StatusOK, `{"ok":true}`)
}

// secrets returns every secret that the server issued or received.
func (s *redactionServer) secrets() map[string]string {
	secrets := map[string]string{
		"the valid API key":    redactionValidKey,
		"the rejected API key": redactionRejectedKey,
		"the broken API key":   redactionBrokenKey,
		"the invalid API key":  redactionInvalidKey,
		"the signup API key":   redactionSignupKey,
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, token := range s.issued {
		kind := "access"
		if i%2 == 1 {
			kind = "ID"
		}
		secrets[fmt.Sprintf("%s token %d", kind, i/2+1)] = token
	}
	return secrets
}

// redactionFixture is every value of an exported type that carries a secret
// after a login, a signup and failed logins against a redactionServer.
type redactionFixture struct {
	server *redactionServer
	values map[string]map[string]any // value name, then container name
}

func addRedactionValue[T any](f *redactionFixture, name string, value T) {
	f.values[name] = secretHolders(value)
}

// newRedactionFixture logs in, signs up and fails logins against a new
// redactionServer, with every manager logging to logger at Debug level.
func newRedactionFixture(t *testing.T, logger *slog.Logger) *redactionFixture {
	t.Helper()
	srv := newRedactionServer(t)
	f := &redactionFixture{server: srv, values: make(map[string]map[string]any)}
	newManager := func(key string) *Manager {
		return NewManager(
			WithBaseURL(srv.URL+"/v0"),
			WithAPIKey(key),
			WithHTTPClient(srv.Client()),
			WithLogger(logger),
			withLoginRetry(0, time.Millisecond, time.Millisecond),
		)
	}

	mgr := newManager(redactionValidKey)
	// The base is a func, which fmt prints as an address. For verbs such as
	// %s, fmt would walk a *http.Transport here field by field and race with
	// its connection goroutines. TestRedactionTransportHidesBase covers that
	// case without sending requests.
	base := apiAttemptFunc(srv.Client().Transport.RoundTrip)
	transport := NewTransport(mgr, base)
	client := &http.Client{Transport: transport}
	for _, reject := range []bool{false, true} {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v0/echo", strings.NewReader(`{}`))
		if err != nil {
			t.Fatalf("http.NewRequest: %v", err)
		}
		if reject {
			req.Header.Set("X-Reject", "yes")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("POST /v0/echo through the transport: %v", err)
		}
		resp.Body.Close()
	}
	access, err := mgr.AccessToken()
	if err != nil {
		t.Fatalf("AccessToken: %v", err)
	}
	id, err := mgr.IDToken()
	if err != nil {
		t.Fatalf("IDToken: %v", err)
	}
	token, err := mgr.Token(t.Context())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	addRedactionValue(f, "access token from AccessToken", access)
	addRedactionValue(f, "ID token from IDToken", id)
	addRedactionValue(f, "access token from Token", token)
	addRedactionValue(f, "API key in a Sensitive", NewSensitive(redactionValidKey))
	addRedactionValue(f, "*Manager after a login", mgr)
	addRedactionValue(f, "*Transport after a request", transport)

	signup, err := SignupAndGenerateKey(t.Context(), "bob", WithBaseURL(srv.URL+"/v0"), WithHTTPClient(srv.Client()), WithLogger(logger))
	if err != nil {
		t.Fatalf("SignupAndGenerateKey: %v", err)
	}
	addRedactionValue(f, "*SignupKeyResponse", signup)
	addRedactionValue(f, "SignupKeyResponse", *signup)

	for _, failure := range []struct {
		name string
		key  string
	}{
		{"rejected API key", redactionRejectedKey},
		{"login failing with 500", redactionBrokenKey},
		{"login failing with 422", redactionInvalidKey},
	} {
		failed := newManager(failure.key)
		_, err := failed.Token(t.Context())
		if err == nil {
			t.Fatalf("Token with the %s succeeded, want an error", failure.name)
		}
		var apiErr *APIError
		if !errors.As(err, &apiErr) {
			t.Fatalf("Token error for the %s is %T, want one wrapping *APIError", failure.name, err)
		}
		addRedactionValue(f, "error from Token for the "+failure.name, err)
		addRedactionValue(f, "*APIError for the "+failure.name, apiErr)
		addRedactionValue(f, "*Manager after the "+failure.name, failed)

		resp, clientErr := (&http.Client{Transport: NewTransport(failed, base)}).Get(srv.URL + "/v0/echo")
		if clientErr == nil {
			resp.Body.Close()
			t.Fatalf("GET /v0/echo with the %s succeeded, want an error", failure.name)
		}
		addRedactionValue(f, "http.Client error for the "+failure.name, clientErr)
	}

	if got := strings.Count(fmt.Sprint(f.server.secrets()), "token"); got < 4 {
		t.Fatalf("the server issued %d tokens, want at least 4 from two logins", got)
	}
	return f
}

func TestRedactionFormatVerbs(t *testing.T) {
	t.Parallel()

	f := newRedactionFixture(t, slog.New(slog.DiscardHandler))
	secrets := f.server.secrets()
	verbs := append(append([]string{}, redactionVerbs...), "% x", "%10.200v", "%p")
	for name, containers := range f.values {
		for container, value := range containers {
			for _, verb := range verbs {
				got := fmt.Sprintf(verb, value)
				checkNoSecret(t, fmt.Sprintf("Sprintf(%q, %s in %s)", verb, name, container), got, secrets)
			}
		}
	}
}

func TestRedactionShowsPlaceholder(t *testing.T) {
	t.Parallel()

	f := newRedactionFixture(t, slog.New(slog.DiscardHandler))
	secrets := f.server.secrets()
	for _, name := range []string{
		"access token from AccessToken",
		"ID token from IDToken",
		"access token from Token",
		"*Manager after a login",
		"*Transport after a request",
		"*SignupKeyResponse",
		"SignupKeyResponse",
		"error from Token for the rejected API key",
		"*APIError for the rejected API key",
		"*APIError for the login failing with 500",
		"*APIError for the login failing with 422",
	} {
		for _, verb := range []string{"%v", "%+v", "%s"} {
			got := fmt.Sprintf(verb, f.values[name]["value"])
			if !strings.Contains(got, redacted) {
				t.Errorf("Sprintf(%q, %s) = %q, want it to contain %q", verb, name, maskSecrets(got, secrets), redacted)
			}
		}
	}
}

func TestRedactionJSONMarshal(t *testing.T) {
	t.Parallel()

	f := newRedactionFixture(t, slog.New(slog.DiscardHandler))
	secrets := f.server.secrets()
	for name, containers := range f.values {
		for container, value := range containers {
			out, err := json.Marshal(value)
			where := fmt.Sprintf("json.Marshal(%s in %s)", name, container)
			if err != nil {
				// A value such as an *http.Transport may not be marshallable;
				// the error must not leak a secret either.
				checkNoSecret(t, where+" error", err.Error(), secrets)
				continue
			}
			checkNoSecret(t, where, string(out), secrets)
		}
	}

	out, err := json.Marshal(f.values["SignupKeyResponse"]["value"])
	if err != nil {
		t.Fatalf("json.Marshal(SignupKeyResponse): %v", err)
	}
	var decoded map[string]any
	if err := json.Unmarshal(out, &decoded); err != nil {
		t.Fatalf("json.Marshal(SignupKeyResponse) is not valid JSON: %v", err)
	}
	if decoded["api_key"] != redacted {
		t.Errorf("json.Marshal(SignupKeyResponse) api_key = %q, want %q", maskSecrets(fmt.Sprint(decoded["api_key"]), secrets), redacted)
	}
}

func TestRedactionSlogAttributes(t *testing.T) {
	t.Parallel()

	f := newRedactionFixture(t, slog.New(slog.DiscardHandler))
	secrets := f.server.secrets()
	handlers := map[string]func(io.Writer) slog.Handler{
		"text": func(w io.Writer) slog.Handler {
			return slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
		},
		"JSON": func(w io.Writer) slog.Handler {
			return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
		},
	}
	for handlerName, newHandler := range handlers {
		for name, containers := range f.values {
			var buf bytes.Buffer
			logger := slog.New(newHandler(&buf))
			for container, value := range containers {
				logger.Info("value", "container", container, "value", value)
				logger.LogAttrs(t.Context(), slog.LevelError, "attr", slog.Any("value", value), slog.Group("group", slog.Any("nested", value)))
				logger.With("value", value).Debug("with")
			}
			if err, ok := containers["value"].(error); ok {
				logger.Error("request failed", "error", err)
			}
			checkNoSecret(t, fmt.Sprintf("%s handler logging %s", handlerName, name), buf.String(), secrets)
		}
	}
}

// TestRedactionLibraryLogs checks the records that the library itself logs,
// at Debug level, during logins, a forced login after a 401, a signup and
// failed logins.
func TestRedactionLibraryLogs(t *testing.T) {
	t.Parallel()

	handlers := map[string]func(io.Writer) slog.Handler{
		"text": func(w io.Writer) slog.Handler {
			return slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
		},
		"JSON": func(w io.Writer) slog.Handler {
			return slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})
		},
	}
	for name, newHandler := range handlers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var logs lockedBuffer
			f := newRedactionFixture(t, slog.New(newHandler(&logs)))

			out := logs.String()
			checkNoSecret(t, name+" library log output", out, f.server.secrets())
			for _, want := range []string{"logged in", "login failed", "acct-redaction"} {
				if !strings.Contains(out, want) {
					t.Errorf("%s library log output does not contain %q, so the check above saw too little", name, want)
				}
			}
		})
	}
}

// TestRedactionTransportHidesBase formats a Transport whose base
// RoundTripper carries proxy credentials. fmt must not walk into the base,
// because that shows the caller's credentials and, while the base sends
// requests, reads its internal state without its locks.
func TestRedactionTransportHidesBase(t *testing.T) {
	t.Parallel()

	const proxyCredential = "Basic bmstdGVzdC1wcm94eTpzZWNyZXQ="
	base := &http.Transport{ProxyConnectHeader: http.Header{"Proxy-Authorization": {proxyCredential}}}
	mgr := NewManager(WithBaseURL("https://api.norman.invalid/v0"), WithAPIKey(redactionValidKey), WithLogger(slog.New(slog.DiscardHandler)))
	transport := NewTransport(mgr, base)

	secrets := map[string]string{"the proxy credential": proxyCredential, "the API key": redactionValidKey}
	for container, value := range secretHolders(transport) {
		for _, verb := range redactionVerbs {
			got := fmt.Sprintf(verb, value)
			checkNoSecret(t, fmt.Sprintf("Sprintf(%q, *Transport in %s)", verb, container), got, secrets)
		}
	}
}
