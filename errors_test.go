package norman

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-retryablehttp"
)

// errorTestKey is the fake API key that error bodies echo in these tests.
const errorTestKey = "nk-test-echoed-key-3a7c90d1e5b2"

var errorTestSecrets = map[string]string{"the API key": errorTestKey}

const errorTestURL = "https://api.norman.invalid/v0/models/get"

func newErrorResponse(t *testing.T, method, rawURL string, status int) (*http.Request, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		t.Fatalf("http.NewRequest: %v", err)
	}
	return req, &http.Response{StatusCode: status, Header: http.Header{}, Request: req}
}

func TestNewAPIErrorBodies(t *testing.T) {
	t.Parallel()

	const nginx502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	cases := []struct {
		name      string
		status    int
		body      string
		want      APIError // Method and URL are filled in from the request
		wantError string
	}{
		{
			name:   "Norman error object",
			status: http.StatusNotFound,
			body:   `{"timestamp":"2024-05-01T12:00:00.123456Z","status_code":404,"error_type":"Not Found","message":"Model not found","cause":"No model has the id m-1.","suggestions":["Check the model id.","List your models."]}`,
			want: APIError{
				StatusCode:  404,
				ErrorType:   "Not Found",
				Message:     "Model not found",
				Cause:       "No model has the id m-1.",
				Suggestions: []string{"Check the model id.", "List your models."},
			},
			wantError: "norman: POST " + errorTestURL + ": 404 Not Found: Model not found (cause: No model has the id m-1.) (suggestions: Check the model id.; List your models.)",
		},
		{
			name:      "Norman error type that is not the status text",
			status:    http.StatusNotFound,
			body:      `{"status_code":404,"error_type":"ModelNotFound","message":"Model not found","cause":"","suggestions":[]}`,
			want:      APIError{StatusCode: 404, ErrorType: "ModelNotFound", Message: "Model not found"},
			wantError: "norman: POST " + errorTestURL + ": 404 Not Found: ModelNotFound: Model not found",
		},
		{
			name:      "Norman error object with object cause and null suggestions",
			status:    http.StatusBadRequest,
			body:      `{"status_code":400,"error_type":"Bad Request","message":"Invalid model","cause":{"field":"name","reason":"too long"},"suggestions":null}`,
			want:      APIError{StatusCode: 400, ErrorType: "Bad Request", Message: "Invalid model", Cause: `{"field":"name","reason":"too long"}`},
			wantError: "norman: POST " + errorTestURL + `: 400 Bad Request: Invalid model (cause: {"field":"name","reason":"too long"})`,
		},
		{
			name:      "Norman error object with error type only",
			status:    http.StatusForbidden,
			body:      `{"error_type":"Forbidden","message":"","cause":null}`,
			want:      APIError{StatusCode: 403, ErrorType: "Forbidden"},
			wantError: "norman: POST " + errorTestURL + ": 403 Forbidden",
		},
		{
			name:      "FastAPI detail string",
			status:    http.StatusUnauthorized,
			body:      `{"detail":"Not authenticated"}`,
			want:      APIError{StatusCode: 401, Message: "Not authenticated"},
			wantError: "norman: POST " + errorTestURL + ": 401 Unauthorized: Not authenticated",
		},
		{
			name:      "FastAPI detail list",
			status:    http.StatusUnprocessableEntity,
			body:      `{"detail":[{"type":"missing","loc":["body","api_key"],"msg":"Field required","input":{}}]}`,
			want:      APIError{StatusCode: 422, Message: `[{"type":"missing","loc":["body","api_key"],"msg":"Field required","input":{}}]`},
			wantError: "norman: POST " + errorTestURL + `: 422 Unprocessable Entity: [{"type":"missing","loc":["body","api_key"],"msg":"Field required","input":{}}]`,
		},
		{
			name:      "plain text",
			status:    http.StatusServiceUnavailable,
			body:      "upstream connect error or disconnect/reset before headers",
			want:      APIError{StatusCode: 503, Message: "upstream connect error or disconnect/reset before headers"},
			wantError: "norman: POST " + errorTestURL + ": 503 Service Unavailable: upstream connect error or disconnect/reset before headers",
		},
		{
			name:   "plain text with line breaks",
			status: http.StatusBadGateway,
			body:   "backend\r\n\tunavailable\n\nretry later\n",
			want:   APIError{StatusCode: 502, Message: "backend unavailable retry later"},
		},
		{
			name:      "HTML from a proxy",
			status:    http.StatusBadGateway,
			body:      nginx502,
			want:      APIError{StatusCode: 502, Message: "<html> <head><title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1></center> <hr><center>nginx</center> </body> </html>"},
			wantError: "norman: POST " + errorTestURL + ": 502 Bad Gateway: <html> <head><title>502 Bad Gateway</title></head> <body> <center><h1>502 Bad Gateway</h1></center> <hr><center>nginx</center> </body> </html>",
		},
		{
			name:      "empty body",
			status:    http.StatusServiceUnavailable,
			body:      "",
			want:      APIError{StatusCode: 503},
			wantError: "norman: POST " + errorTestURL + ": 503 Service Unavailable",
		},
		{
			name:   "JSON object of another shape",
			status: http.StatusBadRequest,
			body:   `{"error":"invalid_request"}`,
			want:   APIError{StatusCode: 400, Message: `{"error":"invalid_request"}`},
		},
		{
			name:      "status without standard text",
			status:    599,
			body:      "network connect timeout",
			want:      APIError{StatusCode: 599, Message: "network connect timeout"},
			wantError: "norman: POST " + errorTestURL + ": 599: network connect timeout",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, resp := newErrorResponse(t, http.MethodPost, errorTestURL, tc.status)
			got := newAPIError(req, resp, []byte(tc.body), errorTestKey)

			want := tc.want
			want.Method, want.URL = http.MethodPost, errorTestURL
			if diff := cmp.Diff(&want, got); diff != "" {
				t.Errorf("newAPIError mismatch (-want +got):\n%s", maskSecrets(diff, errorTestSecrets))
			}
			if tc.wantError != "" && got.Error() != tc.wantError {
				t.Errorf("Error() = %q\nwant      %q", maskSecrets(got.Error(), errorTestSecrets), tc.wantError)
			}
		})
	}
}

func TestNewAPIErrorIndentedDetailList(t *testing.T) {
	t.Parallel()

	body := "{\n  \"detail\": [\n    {\n      \"type\": \"missing\",\n      \"loc\": [\"body\", \"name\"],\n      \"msg\": \"Field required\"\n    }\n  ]\n}"
	req, resp := newErrorResponse(t, http.MethodPut, errorTestURL, http.StatusUnprocessableEntity)
	got := newAPIError(req, resp, []byte(body))

	if strings.ContainsAny(got.Message, "\n\t") {
		t.Errorf("Message = %q, want it on one line", got.Message)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(got.Message)); err != nil {
		t.Fatalf("Message = %q, want the detail list as JSON: %v", got.Message, err)
	}
	if got, want := compact.String(), `[{"type":"missing","loc":["body","name"],"msg":"Field required"}]`; got != want {
		t.Errorf("Message as compact JSON = %s, want %s", got, want)
	}
}

func TestNewAPIErrorClipsLongBody(t *testing.T) {
	t.Parallel()

	// "€" is three bytes long, so a cut at maxErrorBody bytes falls inside a
	// rune unless clip steps back to a rune boundary.
	long := strings.Repeat("€", 400)
	cases := []struct {
		name string
		body string
		text string // the text that Message quotes the start of
	}{
		{name: "plain text", body: long, text: long},
		{name: "Norman message", body: `{"error_type":"Bad Request","message":"` + long + `"}`, text: long},
		{name: "FastAPI detail", body: `{"detail":"` + long + `"}`, text: long},
		{name: "ASCII text", body: strings.Repeat("abcdefghij", 100), text: strings.Repeat("abcdefghij", 100)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, resp := newErrorResponse(t, http.MethodPost, errorTestURL, http.StatusBadRequest)
			got := newAPIError(req, resp, []byte(tc.body)).Message

			if !utf8.ValidString(got) {
				t.Errorf("Message is not valid UTF-8")
			}
			quoted, clipped := strings.CutSuffix(got, "...")
			if !clipped {
				t.Errorf("Message does not end with \"...\" to show that it was clipped")
			}
			if len(quoted) > maxErrorBody {
				t.Errorf("Message quotes %d bytes of the body, want at most %d", len(quoted), maxErrorBody)
			}
			if len(quoted) < maxErrorBody-utf8.UTFMax {
				t.Errorf("Message quotes %d bytes of the body, want nearly %d", len(quoted), maxErrorBody)
			}
			if !strings.HasPrefix(tc.text, quoted) {
				t.Errorf("Message is not the start of the body's text")
			}
		})
	}

	t.Run("Norman cause and suggestions", func(t *testing.T) {
		t.Parallel()
		body := `{"error_type":"Bad Request","message":"m","cause":"` + long + `","suggestions":["` + long + `"]}`
		req, resp := newErrorResponse(t, http.MethodPost, errorTestURL, http.StatusBadRequest)
		got := newAPIError(req, resp, []byte(body))
		for name, field := range map[string]string{"Cause": got.Cause, "Suggestions[0]": got.Suggestions[0]} {
			if !utf8.ValidString(field) {
				t.Errorf("%s is not valid UTF-8", name)
			}
			if len(field) > maxErrorBody+len("...") {
				t.Errorf("len(%s) = %d, want at most %d", name, len(field), maxErrorBody+len("..."))
			}
		}
	})
}

func TestNewAPIErrorScrubsEchoedKey(t *testing.T) {
	t.Parallel()

	cases := []struct {
		name string
		body string
	}{
		{
			name: "Norman error object",
			body: `{"error_type":"Invalid key ` + errorTestKey + `","message":"The API key ` + errorTestKey + ` is not valid.","cause":"Key ` + errorTestKey + ` was revoked.","suggestions":["Replace ` + errorTestKey + `.","Sign up again."]}`,
		},
		{
			name: "Norman error object with object cause",
			body: `{"error_type":"Unauthorized","message":"rejected","cause":{"api_key":"` + errorTestKey + `"}}`,
		},
		{name: "FastAPI detail string", body: `{"detail":"Invalid API key: ` + errorTestKey + `"}`},
		{name: "FastAPI detail list", body: `{"detail":[{"type":"string_too_short","loc":["body","api_key"],"msg":"too short","input":"` + errorTestKey + `"}]}`},
		{name: "JSON-escaped key", body: `{"detail":"Invalid API key: nk\u002dtest\u002decho` + strings.TrimPrefix(errorTestKey, "nk-test-echo") + `"}`},
		{name: "plain text", body: "invalid api key " + errorTestKey + "\n"},
		{name: "HTML", body: "<html><body><p>Key " + errorTestKey + " rejected</p></body></html>"},
		{name: "key repeated", body: errorTestKey + errorTestKey + " " + errorTestKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, resp := newErrorResponse(t, http.MethodPost, "https://api.norman.invalid/v0/authenticate/login/key", http.StatusUnauthorized)
			apiErr := newAPIError(req, resp, []byte(tc.body), "", errorTestKey)

			checkNoSecret(t, "Error()", apiErr.Error(), map[string]string{"the API key": errorTestKey})
			checkNoSecret(t, "%#v", fmt.Sprintf("%#v", apiErr), map[string]string{"the API key": errorTestKey})
			if !strings.Contains(apiErr.Error(), redacted) {
				t.Errorf("Error() = %q, want %q in place of the key", maskSecrets(apiErr.Error(), errorTestSecrets), redacted)
			}
		})
	}
}

// TestNewAPIErrorScrubsKeyAtClip checks bodies in which the echoed key
// crosses the point where the quoted text is clipped. No part of the key
// beyond its public "nk-test-" prefix may be quoted.
func TestNewAPIErrorScrubsKeyAtClip(t *testing.T) {
	t.Parallel()

	secretPart := strings.TrimPrefix(errorTestKey, "nk-test-")
	for fill := maxErrorBody - len(errorTestKey); fill < maxErrorBody; fill += 3 {
		for _, shape := range []string{"text", "message"} {
			t.Run(fmt.Sprintf("%s with key at byte %d", shape, fill), func(t *testing.T) {
				t.Parallel()
				text := strings.Repeat("x", fill) + errorTestKey + " is not a valid API key"
				body := text
				if shape == "message" {
					body = `{"error_type":"Unauthorized","message":"` + text + `"}`
				}
				req, resp := newErrorResponse(t, http.MethodPost, "https://api.norman.invalid/v0/authenticate/login/key", http.StatusUnauthorized)
				got := newAPIError(req, resp, []byte(body), errorTestKey).Message

				// Leaking even the first four secret characters narrows the key down.
				for n := 4; n <= len(secretPart); n++ {
					if strings.Contains(got, "nk-test-"+secretPart[:n]) {
						t.Errorf("Message contains the first %d characters of the key after its public prefix", n)
						break
					}
				}
			})
		}
	}
}

// A secret that ends in dots can be completed by the "..." that marks a
// cut. The cut then moves back to before the secret.
func TestScrubClipDotsCannotCompleteSecret(t *testing.T) {
	t.Parallel()

	for _, secret := range []string{"nk-test-a.", "nk-test-a..", "nk-test-a...", ".", "..", "..."} {
		for before := maxErrorBody - len(secret) - 2; before <= maxErrorBody; before++ {
			// Only the part of the secret before its dots is in the text.
			text := strings.Repeat("x", before) + strings.TrimRight(secret, ".") + strings.Repeat("y", 100)
			got := scrubClip(text, []string{secret})
			if strings.Contains(got, secret) {
				t.Fatalf("%d-byte secret with %d bytes before it: clipped text contains it", len(secret), before)
			}
			if len(got) > maxErrorBody+len("...") {
				t.Fatalf("%d-byte secret with %d bytes before it: clipped text has %d bytes, want at most %d",
					len(secret), before, len(got), maxErrorBody+len("..."))
			}
			if !strings.HasPrefix(text, strings.TrimSuffix(got, "...")) {
				t.Fatalf("%d-byte secret with %d bytes before it: clipped text is not a prefix of the text", len(secret), before)
			}
		}
	}
}

// JSON encoders other than Go's and Python's escape other characters, such
// as "+" as \u002B and "/" as \/. Such a key must not survive in a field.
func TestNewAPIErrorScrubsOtherJSONEscapes(t *testing.T) {
	t.Parallel()

	const key = "nk-test-ab+cd/ef0e1f"
	escaped := strings.NewReplacer("+", `\u002B`, "/", `\/`).Replace(key)
	tests := []struct {
		name, body string
	}{
		{"object cause", `{"error_type":"Bad","message":"m","cause":{"key":"` + escaped + `"}}`},
		{"detail list", `{"detail":[{"loc":["body","api_key"],"msg":"bad","input":"` + escaped + `"}]}`},
		{"object key", `{"detail":{"` + escaped + `":"unknown"}}`},
		{"other JSON", `{"errors":["unknown key ` + escaped + `"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, resp := newErrorResponse(t, http.MethodPost, "https://api.norman.invalid/v0/authenticate/login/key", http.StatusUnprocessableEntity)
			e := newAPIError(req, resp, []byte(tt.body), key)

			text := e.Error()
			forms := map[string]string{"the key": key, "the escaped key": escaped, "an escaped +": `\u002B`, "an escaped /": `\/`}
			for name, form := range forms {
				if strings.Contains(text, form) {
					t.Errorf("error text contains %s", name)
				}
			}
			if !strings.Contains(text, redacted) {
				t.Errorf("error text has no %q in place of the key", redacted)
			}
		})
	}
}

// Error joins the fields with separators such as ": " and "; ". A key that
// contains one must not be formed again from two fields.
func TestAPIErrorTextDoesNotJoinSecret(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name, key, body string
	}{
		{"suggestions", "nk-test-left; right-0a1b", `{"error_type":"Bad","message":"m","suggestions":["use nk-test-left","right-0a1b"]}`},
		{"type and message", "nk-test-left: right-0a1b", `{"error_type":"nk-test-left","message":"right-0a1b"}`},
		{"message and cause", "nk-test-left (cause: right", `{"error_type":"Bad","message":"nk-test-left","cause":"right"}`},
		{"rejected key", "nk-test-left: right-0a1b", `{"error_type":"Bad","message":"nk-test-left","cause":"right-0a1b"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, resp := newErrorResponse(t, http.MethodPost, "https://api.norman.invalid/v0/authenticate/login/key", http.StatusUnprocessableEntity)
			e := newAPIError(req, resp, []byte(tt.body), tt.key)

			if strings.Contains(e.Error(), tt.key) {
				t.Error("error text contains the key, joined from two fields")
			}
			if strings.Contains((&rejectedKeyError{e}).Error(), tt.key) {
				t.Error("rejected key error text contains the key, joined from two fields")
			}
			if e.Message != redacted {
				t.Errorf("Message is %d bytes, want %q", len(e.Message), redacted)
			}
		})
	}
}

func TestNewAPIErrorRedactsURL(t *testing.T) {
	t.Parallel()

	cases := []struct {
		rawURL string
		want   string
	}{
		{"https://api.norman.invalid/v0/models/get?api_key=" + errorTestKey, "https://api.norman.invalid/v0/models/get"},
		{"https://alice:" + errorTestKey + "@api.norman.invalid/v0/models/get", "https://api.norman.invalid/v0/models/get"},
		{"https://alice:" + errorTestKey + "@api.norman.invalid:8443/v0/x?token=" + errorTestKey + "&a=b#frag-" + errorTestKey, "https://api.norman.invalid:8443/v0/x"},
		{"https://api.norman.invalid/v0/x?", "https://api.norman.invalid/v0/x"},
		{"http://127.0.0.1:8080/v0/x#" + errorTestKey, "http://127.0.0.1:8080/v0/x"},
	}
	for _, tc := range cases {
		req, resp := newErrorResponse(t, http.MethodGet, tc.rawURL, http.StatusNotFound)
		got := newAPIError(req, resp, []byte("not found"))
		if got.URL != tc.want {
			t.Errorf("URL = %q, want %q", maskSecrets(got.URL, errorTestSecrets), tc.want)
		}
		checkNoSecret(t, "Error()", got.Error(), map[string]string{"the API key": errorTestKey})
		if !strings.Contains(got.Error(), tc.want) {
			t.Errorf("Error() = %q, want it to contain the URL %q", maskSecrets(got.Error(), errorTestSecrets), tc.want)
		}
	}
}

func TestNewAPIErrorIgnoresEmptySecret(t *testing.T) {
	t.Parallel()

	req, resp := newErrorResponse(t, http.MethodGet, errorTestURL, http.StatusNotFound)
	got := newAPIError(req, resp, []byte("model not found"), "", "")
	if got.Message != "model not found" {
		t.Errorf("Message = %q, want %q", got.Message, "model not found")
	}
}

func TestRejectedKeyErrorMatching(t *testing.T) {
	t.Parallel()

	apiErr := &APIError{
		StatusCode: http.StatusUnauthorized,
		Method:     http.MethodPost,
		URL:        "https://api.norman.invalid/v0/authenticate/login/key",
		ErrorType:  "Unauthorized",
		Message:    "The API key is not valid.",
	}
	var err error = &rejectedKeyError{apiErr: apiErr}

	cases := []struct {
		name string
		err  error
	}{
		{"bare", err},
		{"wrapped", fmt.Errorf("login: %w", err)},
		{"in url.Error", &url.Error{Op: "Get", URL: "https://api.norman.invalid/v0/models", Err: err}},
	}
	for _, tc := range cases {
		if !errors.Is(tc.err, ErrUnauthorized) {
			t.Errorf("%s: errors.Is(err, ErrUnauthorized) = false, want true", tc.name)
		}
		var got *APIError
		if !errors.As(tc.err, &got) {
			t.Errorf("%s: errors.As(err, *APIError) = false, want true", tc.name)
		} else if got != apiErr {
			t.Errorf("%s: errors.As gave %+v, want the wrapped APIError", tc.name, got)
		}
		if errors.Is(tc.err, ErrInsecureURL) || errors.Is(tc.err, ErrNoAPIKey) {
			t.Errorf("%s: error matches an unrelated sentinel error", tc.name)
		}
	}

	want := "norman: API key rejected by https://api.norman.invalid/v0/authenticate/login/key (401 Unauthorized: The API key is not valid.): check the API key given with WithAPIKey, SetAPIKey or NORMAN_API_KEY"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q\nwant      %q", got, want)
	}

	apiErr.Message = ""
	want = "norman: API key rejected by https://api.norman.invalid/v0/authenticate/login/key (401 Unauthorized): check the API key given with WithAPIKey, SetAPIKey or NORMAN_API_KEY"
	if got := err.Error(); got != want {
		t.Errorf("Error() without a message = %q\nwant      %q", got, want)
	}
}

// newFixedStatusServer starts a login server that responds to every request
// with status and body, and counts the requests.
func newFixedStatusServer(t *testing.T, status int, body string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var count atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv, &count
}

func newFixedStatusManager(srv *httptest.Server, key string, opts ...Option) *Manager {
	base := []Option{
		WithBaseURL(srv.URL + "/v0"),
		WithAPIKey(key),
		WithHTTPClient(srv.Client()),
		WithLogger(slog.New(slog.DiscardHandler)),
		withLoginRetry(0, time.Millisecond, time.Millisecond),
	}
	return NewManager(append(base, opts...)...)
}

func TestLoginErrorMatchesUnauthorized(t *testing.T) {
	t.Parallel()

	body := `{"status_code":%d,"error_type":"Unauthorized","message":"The API key ` + errorTestKey + ` is not valid.","cause":"","suggestions":[]}`
	cases := []struct {
		status           int
		wantUnauthorized bool
	}{
		{http.StatusUnauthorized, true},
		{http.StatusForbidden, true},
		{http.StatusNotFound, false},
		{http.StatusBadRequest, false},
		{http.StatusInternalServerError, false},
	}
	for _, tc := range cases {
		t.Run(statusLabel(tc.status), func(t *testing.T) {
			t.Parallel()
			srv, _ := newFixedStatusServer(t, tc.status, fmt.Sprintf(body, tc.status))
			mgr := newFixedStatusManager(srv, errorTestKey)

			_, err := mgr.Token(t.Context())
			if err == nil {
				t.Fatal("Token succeeded, want an error")
			}
			if got := errors.Is(err, ErrUnauthorized); got != tc.wantUnauthorized {
				t.Errorf("errors.Is(err, ErrUnauthorized) = %v, want %v", got, tc.wantUnauthorized)
			}
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("errors.As(err, *APIError) = false for %q", maskSecrets(err.Error(), errorTestSecrets))
			}
			if apiErr.StatusCode != tc.status {
				t.Errorf("APIError.StatusCode = %d, want %d", apiErr.StatusCode, tc.status)
			}
			if apiErr.Method != http.MethodPost || apiErr.URL != srv.URL+"/v0/authenticate/login/key" {
				t.Errorf("APIError names %s %s, want POST %s", apiErr.Method, apiErr.URL, srv.URL+"/v0/authenticate/login/key")
			}
			checkNoSecret(t, "Error()", err.Error(), map[string]string{"the API key": errorTestKey})
			if tc.wantUnauthorized && !strings.Contains(err.Error(), "rejected") {
				t.Errorf("Error() = %q, want it to say that the key was rejected", maskSecrets(err.Error(), errorTestSecrets))
			}
		})
	}
}

func statusLabel(status int) string { return fmt.Sprintf("%d %s", status, http.StatusText(status)) }

func TestCheckRetry(t *testing.T) {
	t.Parallel()

	rejected := &rejectedKeyError{apiErr: &APIError{StatusCode: 401, Method: "POST", URL: "https://api.norman.invalid/v0/authenticate/login/key"}}
	insecure := fmt.Errorf("%w to http://api.norman.invalid: use https", ErrInsecureURL)
	config := newConfigError("norman: invalid base URL %q", "ftp://api.norman.invalid/v0")
	loginRedirect := &APIError{StatusCode: http.StatusTemporaryRedirect, Method: "POST"}
	loginNotFound := &APIError{StatusCode: http.StatusNotFound, Method: "POST"}
	inURLError := func(err error) error {
		return &url.Error{Op: "Post", URL: "https://api.norman.invalid/v0/models/get", Err: err}
	}
	response := func(status int) *http.Response {
		return &http.Response{StatusCode: status, Header: http.Header{}, Body: http.NoBody}
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	cases := []struct {
		name      string
		ctx       context.Context
		resp      *http.Response
		err       error
		wantRetry bool
		wantErr   error // matched with errors.Is; nil means no error
	}{
		{name: "ErrUnauthorized", err: ErrUnauthorized, wantErr: ErrUnauthorized},
		{name: "rejected key", err: rejected, wantErr: ErrUnauthorized},
		{name: "rejected key in url.Error", err: inURLError(rejected), wantErr: ErrUnauthorized},
		{name: "ErrInsecureURL", err: insecure, wantErr: ErrInsecureURL},
		{name: "ErrInsecureURL in url.Error", err: inURLError(insecure), wantErr: ErrInsecureURL},
		{name: "ErrNoAPIKey", err: ErrNoAPIKey, wantErr: ErrNoAPIKey},
		{name: "ErrNoAPIKey in url.Error", err: inURLError(ErrNoAPIKey), wantErr: ErrNoAPIKey},
		{name: "ErrNoBaseURL", err: ErrNoBaseURL, wantErr: ErrNoBaseURL},
		{name: "ErrNoBaseURL in url.Error", err: inURLError(ErrNoBaseURL), wantErr: ErrNoBaseURL},
		{name: "config error", err: config, wantErr: config},
		{name: "config error in url.Error", err: inURLError(config), wantErr: config},
		{name: "wrapped config error in url.Error", err: inURLError(fmt.Errorf("login: %w", config)), wantErr: config},
		{name: "login redirect in url.Error", err: inURLError(loginRedirect), wantErr: loginRedirect},
		{name: "login 404", err: loginNotFound, wantErr: loginNotFound},
		{name: "login 429", err: &APIError{StatusCode: 429}, wantRetry: true},
		{name: "login 408", err: &APIError{StatusCode: 408}, wantRetry: true},
		{name: "login 503", err: &APIError{StatusCode: 503}, wantRetry: true},
		{name: "503", resp: response(503), wantRetry: true},
		{name: "500", resp: response(500), wantRetry: true},
		{name: "429", resp: response(429), wantRetry: true},
		{name: "404", resp: response(404), wantRetry: false},
		{name: "401 response", resp: response(401), wantRetry: false},
		{name: "200", resp: response(200), wantRetry: false},
		{name: "connection refused", err: inURLError(errors.New("dial tcp 127.0.0.1:9: connect: connection refused")), wantRetry: true},
		{name: "503 after cancel", ctx: canceled, resp: response(503), wantRetry: false, wantErr: context.Canceled},
		{name: "rejected key after cancel", ctx: canceled, err: rejected, wantRetry: false, wantErr: ErrUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			retry, err := CheckRetry(ctx, tc.resp, tc.err)
			if retry != tc.wantRetry {
				t.Errorf("CheckRetry retry = %v, want %v", retry, tc.wantRetry)
			}
			switch {
			case tc.wantErr == nil && err != nil:
				t.Errorf("CheckRetry error = %v, want nil", err)
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("CheckRetry error = %v, want one matching %v", err, tc.wantErr)
			}

			wantDefaultRetry, _ := retryablehttp.DefaultRetryPolicy(ctx, tc.resp, tc.err)
			if tc.wantErr == nil && retry != wantDefaultRetry {
				t.Errorf("CheckRetry retry = %v, DefaultRetryPolicy gives %v", retry, wantDefaultRetry)
			}
		})
	}
}

// noSendTransport fails the test if anything is sent through it. It
// never dials.
type noSendTransport struct{ t *testing.T }

func (f noSendTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	f.t.Errorf("request sent to %s %s, want none", req.Method, redactURL(req.URL))
	if req.Body != nil {
		req.Body.Close()
	}
	return nil, errors.New("test transport: no request may be sent")
}

// TestCheckRetryTransportConfigErrors sends requests through a Transport
// whose Manager has an unusable setting. The request must fail with the
// setting's error, without being sent, and CheckRetry must not retry it.
func TestCheckRetryTransportConfigErrors(t *testing.T) {
	t.Parallel()

	cases := []struct {
		name    string
		opts    []Option
		target  string
		wantErr func(error) bool
	}{
		{
			name:    "no base URL",
			opts:    []Option{WithBaseURL(""), WithAPIKey("nk-test-config")},
			target:  "https://api.norman.invalid/v0/models/get",
			wantErr: func(err error) bool { return errors.Is(err, ErrNoBaseURL) },
		},
		{
			name:    "unsupported base URL scheme",
			opts:    []Option{WithBaseURL("ftp://api.norman.invalid/v0"), WithAPIKey("nk-test-config")},
			target:  "ftp://api.norman.invalid/v0/models/get",
			wantErr: func(err error) bool { return errors.As(err, new(*configError)) },
		},
		{
			name:    "plain HTTP base URL",
			opts:    []Option{WithBaseURL("http://api.norman.invalid/v0"), WithAPIKey("nk-test-config")},
			target:  "http://api.norman.invalid/v0/models/get",
			wantErr: func(err error) bool { return errors.Is(err, ErrInsecureURL) },
		},
		{
			name:    "no API key",
			opts:    []Option{WithBaseURL("https://api.norman.invalid/v0"), WithAPIKey("")},
			target:  "https://api.norman.invalid/v0/models/get",
			wantErr: func(err error) bool { return errors.Is(err, ErrNoAPIKey) },
		},
		{
			name:    "API key with control character",
			opts:    []Option{WithBaseURL("https://api.norman.invalid/v0"), WithAPIKey("nk-test-\x1b[0m")},
			target:  "https://api.norman.invalid/v0/models/get",
			wantErr: func(err error) bool { return errors.As(err, new(*configError)) },
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := append([]Option{WithHTTPClient(&http.Client{Transport: noSendTransport{t}}), WithLogger(slog.New(slog.DiscardHandler))}, tc.opts...)
			client := &http.Client{Transport: NewTransport(NewManager(opts...), noSendTransport{t})}

			resp, err := client.Post(tc.target, "application/json", strings.NewReader("{}"))
			if err == nil {
				resp.Body.Close()
				t.Fatalf("request succeeded with status %d, want the configuration error", resp.StatusCode)
			}
			if !tc.wantErr(err) {
				t.Errorf("request error = %v, want the configuration error", err)
			}
			if retry, _ := CheckRetry(t.Context(), nil, err); retry {
				t.Errorf("CheckRetry retry = true, want false for %v", err)
			}
		})
	}
}

func TestCheckRetryStopsRetryablehttpOnRejectedKey(t *testing.T) {
	t.Parallel()

	srv, logins := newFixedStatusServer(t, http.StatusUnauthorized, `{"error_type":"Unauthorized","message":"The API key is not valid."}`)
	mgr := newFixedStatusManager(srv, "nk-test-rejected-by-retry")

	var attempts atomic.Int32
	counting := apiAttemptFunc(func(req *http.Request) (*http.Response, error) {
		attempts.Add(1)
		return srv.Client().Transport.RoundTrip(req)
	})
	client := retryablehttp.NewClient()
	client.HTTPClient = &http.Client{Transport: NewTransport(mgr, counting)}
	client.CheckRetry = CheckRetry
	client.RetryMax = 3
	client.RetryWaitMin, client.RetryWaitMax = time.Millisecond, time.Millisecond
	client.Logger = nil

	resp, err := client.Post(srv.URL+"/v0/models/get", "application/json", []byte("{}"))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("request succeeded with status %d, want the rejected-key error", resp.StatusCode)
	}
	if !errors.Is(err, ErrUnauthorized) {
		t.Errorf("request error = %v, want one matching ErrUnauthorized", err)
	}
	if got := logins.Load(); got != 1 {
		t.Errorf("login requests = %d, want 1", got)
	}
	if got := attempts.Load(); got != 0 {
		t.Errorf("API requests sent = %d, want 0", got)
	}
}

type apiAttemptFunc func(*http.Request) (*http.Response, error)

func (f apiAttemptFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
