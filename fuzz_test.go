package norman

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// minFuzzSecret is the shortest secret whose absence from error text the
// fuzzers check. Shorter values occur in ordinary words by chance.
const minFuzzSecret = 8

// fuzzReceivedAt is the local clock at which fuzzed login responses
// arrive: a whole second, so that a Date header can name it exactly.
var fuzzReceivedAt = time.Date(2031, time.May, 6, 7, 0, 0, 0, time.UTC)

// loginBodyTokens decodes the access and ID tokens that a login body
// carries, the way any JSON reader would, for checks against the values
// the library extracted. Missing or non-string fields give "".
func loginBodyTokens(body []byte) (access, id string) {
	var fields struct {
		AccessToken any `json:"access_token"`
		IDToken     any `json:"id_token"`
	}
	_ = json.Unmarshal(body, &fields)
	access, _ = fields.AccessToken.(string)
	id, _ = fields.IDToken.(string)
	return access, id
}

// checkCleanToken fails t if a token returned by a successful login is
// empty where it must not be, has surrounding whitespace, or contains a
// byte that cannot go into an HTTP header.
func checkCleanToken(t *testing.T, field, token string, required bool) {
	t.Helper()
	if token == "" {
		if required {
			t.Fatalf("%s: got an empty token and no error", field)
		}
		return
	}
	if token != strings.TrimSpace(token) {
		t.Fatalf("%s: got a token with surrounding whitespace (%d bytes)", field, len(token))
	}
	for i, r := range token {
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			t.Fatalf("%s: got a token with the control character %U at byte %d", field, r, i)
		}
	}
}

// checkNoFuzzedSecret fails t if text contains secret, a value taken from
// the fuzzed input, when the secret is long enough to be meaningful.
func checkNoFuzzedSecret(t *testing.T, where, text, secret string) {
	t.Helper()
	if len(secret) >= minFuzzSecret && strings.Contains(text, secret) {
		t.Fatalf("%s contains the %d-byte secret from the input", where, len(secret))
	}
}

// checkTokenState checks a token state from newTokenState. It must contain
// the token it was given, and its instants must follow the receipt in order.
func checkTokenState(t *testing.T, st *tokenState, access string, receivedAt time.Time) {
	t.Helper()
	if got := st.access.Value(); got != access {
		t.Fatalf("token state contains a %d-byte access token, want the %d-byte one passed in", len(got), len(access))
	}
	if got, want := st.bearer.Value(), "Bearer "+access; len(got) != 1 || got[0] != want {
		t.Fatal("bearer value is not \"Bearer \" followed by the access token")
	}
	if st.lifetime <= 0 {
		t.Fatalf("lifetime = %v, want > 0", st.lifetime)
	}
	if !st.receivedAt.Equal(receivedAt) {
		t.Fatalf("receivedAt = %v, want %v", st.receivedAt, receivedAt)
	}
	if !st.expiredAt.After(receivedAt) {
		t.Fatalf("expiredAt = %v, want after the receipt at %v", st.expiredAt, receivedAt)
	}
	if st.staleAt.Before(receivedAt) || st.staleAt.After(st.expiredAt) {
		t.Fatalf("staleAt = %v, want between the receipt %v and expiredAt %v", st.staleAt, receivedAt, st.expiredAt)
	}
}

func FuzzLoginResponse(f *testing.F) {
	exp := fuzzReceivedAt.Add(time.Hour).Unix()
	token := unsignedJWT(map[string]any{"sub": "acct-1", "iat": fuzzReceivedAt.Unix(), "exp": exp})
	expired := unsignedJWT(map[string]any{"exp": fuzzReceivedAt.Add(-time.Minute).Unix()})
	date := fuzzReceivedAt.Format(http.TimeFormat)
	for _, seed := range []struct{ body, date string }{
		{`{"account":{"id":"acct-1","creation_time":"2031-01-01T00:00:00Z","name":"a"},"access_token":"` + token + `","id_token":"` + token + `"}`, date},
		{`{"access_token":"` + token + `"}`, ""},
		{`{"access_token":" ` + token + `\r\n"}`, date},
		{`{"access_token":"` + token + `\u0000"}`, date},
		{`{"access_token":"` + expired + `"}`, date},
		{`{"access_token":"` + token + `"}`, "Mon, 06 May 2031 09:00:00 GMT"},
		{`{"access_token":"` + token + `"}`, "not a date"},
		{`{"access_token":"opaque-token-without-exp"}`, date},
		{`{"access_token":null,"id_token":null,"account":null}`, date},
		{`{"access_token":""}`, date},
		{`{"access_token":"   "}`, date},
		{`{"access_token":42}`, date},
		{`{"access_token":"nk-test-opaque","id_token":"\u001b[31m"}`, date},
		{`<html><body>Bad Gateway</body></html>`, date},
		{`[]`, date},
		{``, date},
	} {
		f.Add([]byte(seed.body), seed.date)
	}

	f.Fuzz(func(t *testing.T, body []byte, date string) {
		wantAccess, wantID := loginBodyTokens(body)

		access, id, accountID, err := parseLoginResponse(body, "application/json")
		if err != nil {
			checkNoFuzzedSecret(t, "parseLoginResponse error", err.Error(), wantAccess)
			checkNoFuzzedSecret(t, "parseLoginResponse error", err.Error(), wantID)
			if access != "" || id != "" || accountID != "" {
				t.Fatal("parseLoginResponse returned values together with an error")
			}
		} else {
			checkCleanToken(t, "access token", access, true)
			checkCleanToken(t, "ID token", id, false)
			if access != strings.TrimSpace(wantAccess) {
				t.Fatalf("access token has %d bytes, want the %d bytes of the body's access_token without surrounding whitespace", len(access), len(strings.TrimSpace(wantAccess)))
			}

			st, err := newTokenState(access, id, accountID, fuzzReceivedAt, date)
			if err != nil {
				checkNoFuzzedSecret(t, "newTokenState error", err.Error(), access)
				if st != nil {
					t.Fatal("newTokenState returned a token state together with an error")
				}
			} else {
				checkTokenState(t, st, access, fuzzReceivedAt)
				if st.accountID != accountID {
					t.Fatalf("account id = %q, want %q", st.accountID, accountID)
				}
			}
		}

		// The same body goes through a whole login: reading, status check,
		// parsing and lifetime, as a manager runs it.
		m := newQuietManager(memBaseURL,
			WithClock(func() time.Time { return fuzzReceivedAt }),
			WithHTTPClient(&http.Client{Transport: apiAttemptFunc(func(req *http.Request) (*http.Response, error) {
				if req.Body != nil {
					_, _ = io.Copy(io.Discard, req.Body)
					req.Body.Close()
				}
				header := http.Header{"Content-Type": {"application/json"}}
				if date != "" {
					header.Set("Date", date)
				}
				return &http.Response{
					StatusCode: http.StatusOK,
					Header:     header,
					Body:       io.NopCloser(bytes.NewReader(body)),
					Request:    req,
				}, nil
			})}),
		)
		st, err := m.doLogin(context.Background(), NewSensitive(aliceKey), nil)
		if err != nil {
			checkNoFuzzedSecret(t, "login error", err.Error(), wantAccess)
			checkNoFuzzedSecret(t, "login error", err.Error(), wantID)
			checkNoFuzzedSecret(t, "login error", err.Error(), aliceKey)
			return
		}
		checkCleanToken(t, "login access token", st.access.Value(), true)
		checkCleanToken(t, "login ID token", st.id.Value(), false)
		checkTokenState(t, st, st.access.Value(), fuzzReceivedAt)
	})
}

// fuzzErrorURL is the request URL of FuzzAPIError without its query, which
// carries the fuzzed secret.
const fuzzErrorURL = "https://api.example.test/v0/authenticate/login/key"

func FuzzAPIError(f *testing.F) {
	const key = "nk-test-5e1f0c9a7b3d2e64"
	for _, seed := range []struct {
		status int
		body   string
		secret string
	}{
		{401, `{"timestamp":"2031-05-06T07:00:00Z","status_code":401,"error_type":"Unauthorized","message":"unknown API key ` + key + `","cause":"the key ` + key + ` was revoked","suggestions":["replace ` + key + `","sign up"]}`, key},
		{422, `{"detail":[{"loc":["body","api_key"],"msg":"bad","input":"` + key + `"}]}`, key},
		{422, `{"detail":"key ` + key + ` is malformed"}`, key},
		{500, `{"message":null,"cause":{"trace":["a","b"]},"suggestions":[]}`, key},
		{502, "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>" + key + "</body></html>", key},
		{503, "", key},
		{429, "slow down " + strings.Repeat("é", 400) + key, key},
		{418, strings.Repeat("x", 600) + key, key},
		{429, "a" + strings.Repeat("é", 300), key}, // the cut falls inside a rune
		{400, "\xff\xfe invalid utf-8 " + key, key},
		{0, `{"error_type":"` + key + `"}`, key},
		{-1, `{"suggestions":["` + strings.Repeat("a", 700) + `"]}`, "aaaaaaaa"},
		{999, `{"message":"\ud800 lone surrogate"}`, ""},
		// The "..." after the cut completes a secret that ends in dots.
		{400, strings.Repeat("a", maxErrorBody-7) + "zzzzzzz" + strings.Repeat("b", 100), "zzzzzzz."},
		// Two suggestions joined by "; " form the secret.
		{422, `{"error_type":"Bad","suggestions":["use nk-test-left","right-0a1b"]}`, "nk-test-left; right-0a1b"},
		// An encoder that writes "+" as \u002B.
		{422, `{"detail":[{"input":"nk-test-ab\u002Bcd0e1f"}]}`, "nk-test-ab+cd0e1f"},
	} {
		f.Add(seed.status, []byte(seed.body), seed.secret)
	}

	f.Fuzz(func(t *testing.T, status int, body []byte, secret string) {
		req, err := http.NewRequest(http.MethodPost, fuzzErrorURL+"?api_key="+url.QueryEscape(secret), nil)
		if err != nil {
			t.Fatalf("NewRequest: %v", err)
		}
		resp := &http.Response{StatusCode: status, Header: http.Header{}, Body: http.NoBody, Request: req}
		e := newAPIError(req, resp, body, secret)

		if e.StatusCode != status {
			t.Fatalf("StatusCode = %d, want %d", e.StatusCode, status)
		}
		if e.URL != fuzzErrorURL {
			t.Fatalf("URL = %q, want %q", e.URL, fuzzErrorURL)
		}
		fields := map[string]string{"ErrorType": e.ErrorType, "Message": e.Message, "Cause": e.Cause}
		for i, s := range e.Suggestions {
			fields["Suggestions["+strconv.Itoa(i)+"]"] = s
		}

		// A secret that is part of the placeholder itself cannot be
		// distinguished from the placeholder.
		checkSecret := !strings.Contains(redacted, secret)
		validIn := utf8.Valid(body) && utf8.ValidString(secret)
		for name, value := range fields {
			if checkSecret {
				checkNoFuzzedSecret(t, name, value, secret)
			}
			if len(value) > maxErrorBody+len("...") {
				t.Fatalf("%s has %d bytes, want at most %d", name, len(value), maxErrorBody+len("..."))
			}
			if validIn && !utf8.ValidString(value) {
				t.Fatalf("%s is not valid UTF-8 for valid UTF-8 input", name)
			}
		}

		// The suggestions are one field of the error text, and are cut
		// like the others.
		if joined := strings.Join(e.Suggestions, "; "); len(joined) > maxErrorBody+len("...") {
			t.Fatalf("%d suggestions quote %d bytes, want at most %d", len(e.Suggestions), len(joined), maxErrorBody+len("..."))
		}

		// The method, URL and status come before the fields in the error
		// text, and a secret can be part of them.
		bare := &APIError{StatusCode: status, Method: http.MethodPost, URL: fuzzErrorURL, Message: redacted}
		text := e.Error()
		if checkSecret && !strings.Contains(bare.Error(), secret) {
			checkNoFuzzedSecret(t, "Error()", text, secret)
		}
		if checkSecret && !strings.Contains((&rejectedKeyError{bare}).Error(), secret) {
			checkNoFuzzedSecret(t, "rejected key error", (&rejectedKeyError{e}).Error(), secret)
		}
		if !strings.HasPrefix(text, "norman: POST "+fuzzErrorURL+": ") {
			t.Fatalf("Error() = %.80q..., want it to start with the method and URL", text)
		}
		if validIn && !utf8.ValidString(text) {
			t.Fatal("Error() is not valid UTF-8 for valid UTF-8 input")
		}
	})
}
