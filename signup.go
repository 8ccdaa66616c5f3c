package norman

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode"
)

// signupPath is the signup endpoint, relative to the base URL.
const signupPath = "authenticate/signup/key"

// SignupKeyResponse is the result of [SignupAndGenerateKey]: the new account
// and its API key. It prints, logs and marshals without the key.
type SignupKeyResponse struct {
	Account Account           `json:"account"`
	APIKey  Sensitive[string] `json:"api_key"`
}

// Account is a Norman account.
type Account struct {
	ID           string    `json:"id"`
	CreationTime time.Time `json:"creation_time"` // UTC when the server sent no zone
	Name         string    `json:"name"`
}

// UnmarshalJSON reads an account as the Norman API writes it. The server
// writes creation_time in Python's ISO 8601 forms: with "Z", with an offset,
// or without a zone, which means UTC, and with up to six fraction digits.
// A null or missing creation_time gives the zero time.
func (a *Account) UnmarshalJSON(data []byte) error {
	var raw struct {
		ID           string  `json:"id"`
		CreationTime *string `json:"creation_time"`
		Name         string  `json:"name"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return err
	}
	*a = Account{ID: raw.ID, Name: raw.Name}
	if raw.CreationTime == nil || *raw.CreationTime == "" {
		return nil
	}
	t, err := parseISOTime(*raw.CreationTime)
	if err != nil {
		return err
	}
	a.CreationTime = t
	return nil
}

// isoLayouts are the forms of Python's datetime.isoformat and pydantic.
// Fraction digits of any length are accepted after the seconds.
var isoLayouts = []string{
	time.RFC3339,
	"2006-01-02T15:04:05",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05",
}

func parseISOTime(s string) (time.Time, error) {
	for _, layout := range isoLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid creation_time %q: want ISO 8601, such as 2024-05-01T12:30:00.123456Z", s)
}

// SignupAndGenerateKey creates an account named username and returns it
// with its new API key. It needs no API key, so it is a function rather
// than a Manager method. It reads [WithBaseURL], [WithHTTPClient] and
// [WithLogger] from opts and ignores the others.
//
// The signup is not retried, because a retry after a lost response could
// create a second account. Errors are an [*APIError] for a non-2xx response,
// or describe the invalid input or response.
func SignupAndGenerateKey(ctx context.Context, username string, opts ...Option) (*SignupKeyResponse, error) {
	o := newOptions(opts)
	base, err := parseBaseURL(o.baseURL)
	if err != nil {
		return nil, err
	}
	name, err := cleanUsername(username)
	if err != nil {
		return nil, err
	}

	body, err := json.Marshal(struct {
		Name     string  `json:"name"`
		DeviceID *string `json:"device_id"`
	}{Name: name})
	if err != nil {
		return nil, fmt.Errorf("norman: signup: encoding request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, joinURL(base, signupPath), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("norman: signup: %w", err)
	}
	setJSONHeaders(req.Header)

	resp, err := newHTTPClient(o.httpClient).Do(req)
	if err != nil {
		return nil, fmt.Errorf("norman: signup: %w", err)
	}
	defer resp.Body.Close()
	data, err := readResponse("signup", req, resp)
	if err != nil {
		return nil, err
	}

	out, err := parseSignupResponse(data, resp.Header.Get("Content-Type"))
	if err != nil {
		return nil, err
	}
	logger := o.logger
	if logger == nil {
		logger = slog.Default()
	}
	logger.Debug("norman: signed up", "account_id", out.Account.ID, "name", out.Account.Name)
	return out, nil
}

func parseSignupResponse(data []byte, contentType string) (*SignupKeyResponse, error) {
	var out SignupKeyResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("norman: signup: invalid response (Content-Type %q): %v", contentType, err)
	}
	key, err := cleanSecret("API key", out.APIKey.Value())
	if err != nil {
		return nil, fmt.Errorf("norman: signup: %w", err)
	}
	if key == "" {
		return nil, errors.New("norman: signup: response has no api_key")
	}
	out.APIKey = NewSensitive(key)
	return &out, nil
}

// cleanUsername trims username and rejects an empty one or one with a
// control character.
func cleanUsername(username string) (string, error) {
	name := strings.TrimSpace(username)
	if name == "" {
		return "", errors.New("norman: signup: empty username: pass the name for the new account")
	}
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return "", fmt.Errorf("norman: signup: invalid username %q: it contains a control character", name)
	}
	return name, nil
}
