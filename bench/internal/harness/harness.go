// Package harness holds the pieces that the benchmarks and the load
// commands share: an in-memory RoundTripper, an oauth2 TokenSource that logs
// in to a Norman server, and latency statistics.
package harness

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Canned is an [http.RoundTripper] that answers every request with the same
// 200 response and performs no I/O. The response has an [http.NoBody] body,
// so a round trip through Canned allocates nothing.
//
// Every caller gets the same *http.Response, which must be treated as read
// only; neither norman.Transport nor oauth2.Transport writes to it on a 200.
type Canned struct {
	resp *http.Response
}

// NewCanned returns a Canned RoundTripper.
func NewCanned() *Canned {
	return &Canned{resp: &http.Response{
		Status:     "200 OK",
		StatusCode: http.StatusOK,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       http.NoBody,
	}}
}

// RoundTrip implements [http.RoundTripper]. It closes the request body, as
// the RoundTripper contract requires, and returns the canned response.
func (c *Canned) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return c.resp, nil
}

// Recorder is an [http.RoundTripper] that keeps the Authorization header of
// the last request and responds like [Canned]. Benchmarks use it once,
// before timing, to check that a token is attached.
type Recorder struct {
	Canned
	Authorization string
}

// NewRecorder returns a Recorder.
func NewRecorder() *Recorder {
	return &Recorder{Canned: *NewCanned()}
}

// RoundTrip implements [http.RoundTripper].
func (r *Recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.Authorization = req.Header.Get("Authorization")
	return r.Canned.RoundTrip(req)
}

// LoginSource is an [oauth2.TokenSource] that logs in to a Norman server
// with an API key, the way an oauth2 user would have to write it. Each call
// to Token makes one login. The token's Expiry is the exp claim of the JWT,
// read without verifying the signature.
type LoginSource struct {
	Client  *http.Client // nil means http.DefaultClient
	BaseURL string       // the Norman base URL, ending in the API version
	APIKey  string
}

// Token implements [oauth2.TokenSource]. Its errors never contain the API
// key or a token.
func (s *LoginSource) Token() (*oauth2.Token, error) {
	body, err := json.Marshal(map[string]string{"api_key": s.APIKey})
	if err != nil {
		return nil, err
	}

	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Post(strings.TrimSuffix(s.BaseURL, "/")+"/authenticate/login/key",
		"application/json", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	defer resp.Body.Close()

	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("login: reading response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("login: status %d", resp.StatusCode)
	}

	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(data, &out); err != nil || out.AccessToken == "" {
		return nil, errors.New("login: response has no access_token")
	}
	exp, err := Expiry(out.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	return &oauth2.Token{AccessToken: out.AccessToken, TokenType: "Bearer", Expiry: exp}, nil
}

// Expiry returns the exp claim of a JWT without verifying it.
func Expiry(token string) (time.Time, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, errors.New("access token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, errors.New("access token payload is not base64url")
	}
	var claims struct {
		Exp float64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp <= 0 {
		return time.Time{}, errors.New("access token has no exp claim")
	}
	sec := int64(claims.Exp)
	return time.Unix(sec, int64((claims.Exp-float64(sec))*1e9)), nil
}

// Latencies summarises request durations.
type Latencies struct {
	Count         int
	P50, P99, Max time.Duration
}

// Summarize sorts d in place and returns its count, median, 99th
// percentile and maximum.
func Summarize(d []time.Duration) Latencies {
	if len(d) == 0 {
		return Latencies{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration {
		i := int(q*float64(len(d)-1) + 0.5)
		return d[i]
	}
	return Latencies{Count: len(d), P50: at(0.50), P99: at(0.99), Max: d[len(d)-1]}
}
