package norman

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Errors that callers match with [errors.Is].
var (
	// ErrNoAPIKey means the manager has no API key to log in with.
	ErrNoAPIKey = errors.New("norman: no API key: call SetAPIKey, use WithAPIKey or set NORMAN_API_KEY")

	// ErrNoBaseURL means the manager or signup call has no base URL.
	ErrNoBaseURL = errors.New("norman: no base URL: use WithBaseURL or set NORMAN_BASE_URL")

	// ErrNotLoggedIn means no login has succeeded yet with the current API key.
	ErrNotLoggedIn = errors.New("norman: not logged in: call Token or InvalidateAccessToken first")

	// ErrUnauthorized means the server rejected the API key: a login got a
	// 401 or 403 response. Retrying with the same key cannot succeed.
	ErrUnauthorized = errors.New("norman: API key rejected")

	// ErrInsecureURL means a request would have sent the API key or a token
	// over plain HTTP to a host that is not a loopback address.
	ErrInsecureURL = errors.New("norman: refusing to send credentials over plain HTTP")

	// ErrTokenInvalid means that an access or ID token from a login failed
	// verification against the JSON Web Key Set named by WithJWKS. The
	// login's error names the token and the check that failed. The token is
	// not stored, returned or sent.
	ErrTokenInvalid = errors.New("norman: token failed verification")
)

// maxErrorBody is the number of bytes of a response body that an error quotes.
const maxErrorBody = 512

// APIError is a non-2xx response from the Norman API. It carries whatever the
// body explained: a Norman error object, a FastAPI detail, or plain text.
// Known secrets are replaced with "<redacted>" in every field.
type APIError struct {
	StatusCode  int      // HTTP status code, such as 401
	Method      string   // request method
	URL         string   // request URL without query, fragment or user info
	ErrorType   string   // Norman error_type, such as "Unauthorized"; "" if the body had none
	Message     string   // the body's message, FastAPI detail, or text, cut after 512 bytes
	Cause       string   // Norman cause; "" if the body had none
	Suggestions []string // Norman suggestions for fixing the problem
}

// Error returns "norman: METHOD URL: STATUS: message".
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "norman: %s %s: %d", e.Method, e.URL, e.StatusCode)
	if text := http.StatusText(e.StatusCode); text != "" {
		b.WriteString(" " + text)
	}
	if e.ErrorType != "" && e.ErrorType != http.StatusText(e.StatusCode) {
		b.WriteString(": " + e.ErrorType)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Cause != "" {
		b.WriteString(" (cause: " + e.Cause + ")")
	}
	if len(e.Suggestions) > 0 {
		b.WriteString(" (suggestions: " + strings.Join(e.Suggestions, "; ") + ")")
	}
	return b.String()
}

// newAPIError builds an APIError from a failed response whose body has
// already been read. Every occurrence of a secret is replaced.
func newAPIError(req *http.Request, resp *http.Response, body []byte, secrets ...string) *APIError {
	e := &APIError{
		StatusCode: resp.StatusCode,
		Method:     req.Method,
		URL:        redactURL(req.URL),
	}
	// Scrub the raw body, where a secret may appear JSON-escaped, and then
	// the decoded fields, before clipping, so that a cut cannot leave part of
	// a secret behind.
	secrets = escapedForms(secrets)
	parseErrorBody(e, []byte(scrub(string(body), secrets)), secrets)

	e.ErrorType = scrubClip(e.ErrorType, secrets)
	e.Message = scrubClip(e.Message, secrets)
	e.Cause = scrubClip(e.Cause, secrets)
	e.Suggestions = clipSuggestions(e.Suggestions, secrets)

	// A secret that contains a separator of the error texts, such as "; ",
	// can be formed again by joining two fields that are clean on their own.
	if containsAny(e.Error(), secrets) || containsAny((&rejectedKeyError{e}).Error(), secrets) {
		e.ErrorType, e.Cause, e.Suggestions = "", "", nil
		e.Message = redacted
	}
	return e
}

// clipSuggestions scrubs suggestions and keeps them while their total
// length stays within maxErrorBody bytes. The first one is kept in any case,
// clipped.
func clipSuggestions(suggestions, secrets []string) []string {
	var clipped []string
	room := maxErrorBody
	for _, s := range suggestions {
		s = scrubClip(s, secrets)
		if len(clipped) > 0 && len(s) > room {
			break
		}
		clipped = append(clipped, s)
		room -= len(s) + len("; ") // as APIError.Error joins them
	}
	return clipped
}

// parseErrorBody fills e from a Norman error object, a FastAPI
// {"detail": ...} object, or any other text.
func parseErrorBody(e *APIError, body []byte, secrets []string) {
	var normanBody struct {
		ErrorType   string          `json:"error_type"`
		Message     string          `json:"message"`
		Cause       json.RawMessage `json:"cause"`
		Suggestions []string        `json:"suggestions"`
		Detail      json.RawMessage `json:"detail"`
	}
	if json.Unmarshal(body, &normanBody) == nil {
		e.ErrorType = normanBody.ErrorType
		e.Message = normanBody.Message
		e.Cause = jsonText(normanBody.Cause, secrets)
		if len(normanBody.Suggestions) > 0 {
			e.Suggestions = normanBody.Suggestions
		}
		if e.Message == "" {
			e.Message = jsonText(normanBody.Detail, secrets)
		}
		if e.ErrorType != "" || e.Message != "" {
			return
		}
	}
	e.Message = bodyText(body, secrets)
}

// jsonText returns a JSON string's contents, or the text of any other JSON
// value, such as FastAPI's list of validation errors, as bodyText gives it.
// Null gives "".
func jsonText(raw json.RawMessage, secrets []string) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return bodyText(raw, secrets)
}

// bodyText returns body with runs of whitespace collapsed to one space.
// JSON can escape a secret in forms that scrub does not know, such as
// \u002B for "+". If body is JSON with a secret in its decoded strings, it
// is encoded again with the secrets replaced.
//
// NOTE: a secret escaped inside text that is not valid JSON is not found.
func bodyText(body []byte, secrets []string) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) == nil && dec.Decode(new(any)) == io.EOF {
		if scrubbed, found := scrubJSON(v, secrets); found {
			var b bytes.Buffer
			enc := json.NewEncoder(&b)
			enc.SetEscapeHTML(false)
			if enc.Encode(scrubbed) == nil {
				return strings.TrimSuffix(b.String(), "\n")
			}
		}
	}
	return strings.Join(strings.Fields(string(body)), " ")
}

// scrubJSON scrubs every string and object key in v, a value decoded from
// JSON, and reports whether it replaced anything.
func scrubJSON(v any, secrets []string) (any, bool) {
	switch v := v.(type) {
	case string:
		s := scrub(v, secrets)
		return s, s != v
	case []any:
		found := false
		for i, item := range v {
			var f bool
			v[i], f = scrubJSON(item, secrets)
			found = found || f
		}
		return v, found
	case map[string]any:
		found := false
		scrubbed := make(map[string]any, len(v))
		for key, item := range v {
			k := scrub(key, secrets)
			item, f := scrubJSON(item, secrets)
			scrubbed[k] = item
			found = found || f || k != key
		}
		return scrubbed, found
	}
	return v, false
}

// containsAny reports whether s contains any of the non-empty strings in
// subs.
func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if sub != "" && strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// scrubClip scrubs s and shortens it to at most maxErrorBody bytes, then
// "...". The dots can complete a secret that ends in dots, so the cut moves
// back to before any secret they complete.
func scrubClip(s string, secrets []string) string {
	s = scrub(s, secrets)
	if len(s) <= maxErrorBody {
		return s
	}
	cut := runeStartAtOrBefore(s, maxErrorBody)
	for {
		clipped := s[:cut] + "..."
		at := -1
		for _, secret := range secrets {
			if i := strings.Index(clipped, secret); secret != "" && i >= 0 && (at < 0 || i < at) {
				at = i
			}
		}
		switch {
		case at < 0:
			return clipped
		case at >= cut:
			// Only a secret made of dots alone fits inside the marker, so
			// the marker is left out.
			return s[:cut]
		}
		cut = runeStartAtOrBefore(s, at)
	}
}

// clipTo shortens s to at most n bytes, then "...", without splitting a
// UTF-8 sequence.
func clipTo(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:runeStartAtOrBefore(s, n)] + "..."
}

// runeStartAtOrBefore returns the largest index i <= n, with n < len(s), at
// which a UTF-8 sequence of s starts, or 0.
func runeStartAtOrBefore(s string, n int) int {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n
}

// scrub replaces each non-empty secret in s with "<redacted>". If the
// replacements themselves form a secret again, which a secret that starts
// or ends like "<redacted>" can do, the whole text becomes "<redacted>".
func scrub(s string, secrets []string) string {
	for _, secret := range secrets {
		if secret != "" && strings.Contains(s, secret) {
			s = strings.ReplaceAll(s, secret, redacted)
		}
	}
	if containsAny(s, secrets) {
		return redacted
	}
	return s
}

// escapedForms returns each non-empty secret as written and as JSON encoders
// escape it: Go's encoding/json, which escapes <, > and &, and Python's
// json.dumps, which also escapes every non-ASCII character.
func escapedForms(secrets []string) []string {
	var forms []string
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		forms = append(forms, secret)
		if quoted, err := json.Marshal(secret); err == nil {
			forms = append(forms, string(quoted[1:len(quoted)-1]))
		}
		forms = append(forms, asciiJSONEscape(secret))
	}
	return forms
}

// asciiJSONEscape escapes s as a JSON string body with only ASCII
// characters, as Python's json.dumps does by default. Control characters
// are left alone, because API keys and tokens cannot contain them.
func asciiJSONEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x80:
			b.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, "\\u%04x\\u%04x", r1, r2)
		default:
			fmt.Fprintf(&b, "\\u%04x", r)
		}
	}
	return b.String()
}

// redactURL returns u without user info, query or fragment, where secrets
// are most often carried.
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	clean := *u
	clean.User = nil
	clean.RawQuery = ""
	clean.ForceQuery = false
	clean.Fragment = ""
	clean.RawFragment = ""
	return clean.String()
}

// configError is a setting that no retry can fix: an invalid base URL,
// origin, JWKS URL or API key. err, if not nil, is a sentinel such as
// ErrInsecureURL that the error also matches.
type configError struct {
	msg string
	err error
}

func (e *configError) Error() string { return e.msg }
func (e *configError) Unwrap() error { return e.err }

func newConfigError(format string, args ...any) error {
	return &configError{msg: fmt.Sprintf(format, args...)}
}

// rejectedKeyError is a login that got a 401 or 403 response.
type rejectedKeyError struct {
	apiErr *APIError
}

func (e *rejectedKeyError) Error() string {
	msg := fmt.Sprintf("norman: API key rejected by %s (%d %s", e.apiErr.URL, e.apiErr.StatusCode, http.StatusText(e.apiErr.StatusCode))
	if e.apiErr.Message != "" {
		msg += ": " + e.apiErr.Message
	}
	if e.apiErr.Cause != "" {
		msg += ": " + e.apiErr.Cause
	}
	return msg + "): check the API key given with WithAPIKey, SetAPIKey or NORMAN_API_KEY"
}

func (e *rejectedKeyError) Unwrap() []error { return []error{ErrUnauthorized, e.apiErr} }
