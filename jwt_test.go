package norman

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// jwtSample is one row of testdata/jwt-samples.tsv.
type jwtSample struct {
	name     string
	exp, iat string // Unix seconds, or "-" for absent or unreadable
	token    string
}

// minJWTSamples is the number of rows that testdata/jwt-samples.tsv had when
// these tests were written. Fewer rows means that samples were lost.
const minJWTSamples = 8

func readJWTSamples(tb testing.TB) []jwtSample {
	tb.Helper()
	f, err := os.Open("testdata/jwt-samples.tsv")
	if err != nil {
		tb.Fatalf("opening the JWT samples: %v", err)
	}
	defer f.Close()

	var samples []jwtSample
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 64<<10), 1<<20)
	line := 0
	for scanner.Scan() {
		line++
		text := strings.TrimRight(scanner.Text(), "\r")
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Split(text, "\t")
		if len(fields) != 5 {
			tb.Fatalf("testdata/jwt-samples.tsv:%d: got %d tab-separated fields, want 5 (name, exp, iat, source, token)", line, len(fields))
		}
		samples = append(samples, jwtSample{name: fields[0], exp: fields[1], iat: fields[2], token: fields[4]})
	}
	if err := scanner.Err(); err != nil {
		tb.Fatalf("reading the JWT samples: %v", err)
	}
	if len(samples) < minJWTSamples {
		tb.Fatalf("testdata/jwt-samples.tsv has %d samples, want at least %d", len(samples), minJWTSamples)
	}
	return samples
}

// sampleTime converts a column of the samples file to the time that
// readTokenTimes must return: the zero time for "-".
func sampleTime(t *testing.T, column, value string) time.Time {
	t.Helper()
	if value == "-" {
		return time.Time{}
	}
	seconds, err := strconv.ParseInt(value, 10, 64)
	if err != nil {
		t.Fatalf("invalid %s column %q: want Unix seconds or -", column, value)
	}
	return time.Unix(seconds, 0)
}

func TestReadTokenTimesSamples(t *testing.T) {
	t.Parallel()

	for _, sample := range readJWTSamples(t) {
		t.Run(sample.name, func(t *testing.T) {
			t.Parallel()
			wantExp := sampleTime(t, "exp", sample.exp)
			wantIat := sampleTime(t, "iat", sample.iat)

			got, err := readTokenTimes(sample.token)
			if err != nil && (!wantExp.IsZero() || !wantIat.IsZero()) {
				t.Fatalf("readTokenTimes: %v, want exp %s and iat %s", err, sample.exp, sample.iat)
			}
			if !got.expiresAt.Equal(wantExp) {
				t.Errorf("expiresAt = %s, want %s", formatUnixSeconds(got.expiresAt), formatUnixSeconds(wantExp))
			}
			if !got.issuedAt.Equal(wantIat) {
				t.Errorf("issuedAt = %s, want %s", formatUnixSeconds(got.issuedAt), formatUnixSeconds(wantIat))
			}
		})
	}
}

// formatUnixSeconds shows t as Unix seconds, or "absent" for the zero time.
func formatUnixSeconds(t time.Time) string {
	if t.IsZero() {
		return "absent"
	}
	return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', -1, 64)
}

const (
	jwtHeaderHS256   = `{"alg":"HS256","typ":"JWT"}`
	jwtFakeSignature = "ZmFrZS1zaWduYXR1cmU"
)

// encodeTestJWT joins header and payload, encoded as unpadded base64url, and sig.
func encodeTestJWT(header, payload, sig string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(header)) + "." +
		base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + sig
}

// encodePaddedTestJWT is encodeTestJWT with padded base64url segments. It fails the test
// if neither segment needs padding, since the case would then test nothing.
func encodePaddedTestJWT(t *testing.T, header, payload string) string {
	t.Helper()
	h := base64.URLEncoding.EncodeToString([]byte(header))
	p := base64.URLEncoding.EncodeToString([]byte(payload))
	if !strings.HasSuffix(h, "=") || !strings.HasSuffix(p, "=") {
		t.Fatalf("padded JWT fixture: header and payload must both need padding, got %q and %q", h, p)
	}
	return h + "." + p + "." + jwtFakeSignature
}

func TestReadTokenTimesForms(t *testing.T) {
	t.Parallel()

	unix := func(sec, nsec int64) time.Time { return time.Unix(sec, nsec) }
	const exp, iat = 1700000000, 1699996400
	const payload = `{"sub":"acct-1","exp":1700000000,"iat":1699996400}`

	cases := []struct {
		name    string
		token   string
		wantExp time.Time // zero means absent or unreadable
		wantIat time.Time
		wantErr bool // the payload cannot be decoded at all
	}{
		{name: "integer exp", token: encodeTestJWT(jwtHeaderHS256, payload, jwtFakeSignature), wantExp: unix(exp, 0), wantIat: unix(iat, 0)},
		{name: "float exp", token: encodeTestJWT(jwtHeaderHS256, `{"exp":1700000000.5,"iat":1699996400.25}`, jwtFakeSignature), wantExp: unix(exp, 5e8), wantIat: unix(iat, 25e7)},
		{name: "float exp with exponent", token: encodeTestJWT(jwtHeaderHS256, `{"exp":1.7e9}`, jwtFakeSignature), wantExp: unix(exp, 0)},
		{name: "numeric string exp", token: encodeTestJWT(jwtHeaderHS256, `{"exp":"1700000000","iat":"1699996400"}`, jwtFakeSignature), wantExp: unix(exp, 0), wantIat: unix(iat, 0)},
		{name: "numeric string float exp", token: encodeTestJWT(jwtHeaderHS256, `{"exp":"1700000000.5"}`, jwtFakeSignature), wantExp: unix(exp, 5e8)},
		{name: "padded segments", token: encodePaddedTestJWT(t, `{"alg":"ES256K"}`, `{"exp":1700000000,"iat":1699996400}`), wantExp: unix(exp, 0), wantIat: unix(iat, 0)},
		{name: "alg ES256K", token: encodeTestJWT(`{"alg":"ES256K","typ":"JWT"}`, payload, jwtFakeSignature), wantExp: unix(exp, 0), wantIat: unix(iat, 0)},
		{name: "unknown alg", token: encodeTestJWT(`{"alg":"XYZ"}`, payload, jwtFakeSignature), wantExp: unix(exp, 0), wantIat: unix(iat, 0)},
		{name: "alg none with empty signature", token: encodeTestJWT(`{"alg":"none"}`, payload, ""), wantExp: unix(exp, 0), wantIat: unix(iat, 0)},
		{name: "no alg", token: encodeTestJWT(`{"typ":"JWT"}`, payload, jwtFakeSignature), wantExp: unix(exp, 0), wantIat: unix(iat, 0)},
		{name: "signature not base64", token: encodeTestJWT(jwtHeaderHS256, payload, "not*base64!"), wantExp: unix(exp, 0), wantIat: unix(iat, 0)},
		{name: "CRLF inside JSON", token: encodeTestJWT("{\"alg\":\"HS256\",\r\n \"typ\":\"JWT\"}", "{\"exp\":1700000000,\r\n \"iat\":1699996400\r\n}", jwtFakeSignature), wantExp: unix(exp, 0), wantIat: unix(iat, 0)},
		{name: "exp null", token: encodeTestJWT(jwtHeaderHS256, `{"exp":null,"iat":1699996400}`, jwtFakeSignature), wantIat: unix(iat, 0)},
		{name: "exp absent", token: encodeTestJWT(jwtHeaderHS256, `{"sub":"acct-1","iat":1699996400}`, jwtFakeSignature), wantIat: unix(iat, 0)},
		{name: "empty claims", token: encodeTestJWT(jwtHeaderHS256, `{}`, jwtFakeSignature)},
		{name: "exp zero", token: encodeTestJWT(jwtHeaderHS256, `{"exp":0}`, jwtFakeSignature), wantExp: unix(0, 0)},
		{name: "exp negative", token: encodeTestJWT(jwtHeaderHS256, `{"exp":-1.5}`, jwtFakeSignature), wantExp: unix(-2, 5e8)},
		{name: "exp at year 9999", token: encodeTestJWT(jwtHeaderHS256, `{"exp":253402300799}`, jwtFakeSignature), wantExp: unix(253402300799, 0)},
		{name: "exp past year 9999", token: encodeTestJWT(jwtHeaderHS256, `{"exp":253402300800}`, jwtFakeSignature)},
		{name: "exp huge", token: encodeTestJWT(jwtHeaderHS256, `{"exp":1e300,"iat":1699996400}`, jwtFakeSignature), wantIat: unix(iat, 0)},
		{name: "exp hugely negative", token: encodeTestJWT(jwtHeaderHS256, `{"exp":-1e300}`, jwtFakeSignature)},
		{name: "exp beyond float64", token: encodeTestJWT(jwtHeaderHS256, `{"exp":1e400}`, jwtFakeSignature)},
		{name: "exp word string", token: encodeTestJWT(jwtHeaderHS256, `{"exp":"tomorrow"}`, jwtFakeSignature)},
		{name: "exp string with spaces", token: encodeTestJWT(jwtHeaderHS256, `{"exp":" 1700000000 "}`, jwtFakeSignature)},
		{name: "exp bool", token: encodeTestJWT(jwtHeaderHS256, `{"exp":true}`, jwtFakeSignature)},
		{name: "exp object", token: encodeTestJWT(jwtHeaderHS256, `{"exp":{"value":1700000000}}`, jwtFakeSignature)},
		{name: "exp array", token: encodeTestJWT(jwtHeaderHS256, `{"exp":[1700000000]}`, jwtFakeSignature)},
		{name: "claim names are case sensitive", token: encodeTestJWT(jwtHeaderHS256, `{"EXP":1700000000,"Iat":1699996400}`, jwtFakeSignature)},
		{name: "differently cased claim after exp", token: encodeTestJWT(jwtHeaderHS256, `{"exp":1700000000,"Exp":1}`, jwtFakeSignature), wantExp: unix(exp, 0)},
		{name: "non-JSON payload", token: encodeTestJWT(jwtHeaderHS256, "Example of Ed25519 signing", jwtFakeSignature), wantErr: true},
		{name: "JSON array payload", token: encodeTestJWT(jwtHeaderHS256, `[{"exp":1700000000}]`, jwtFakeSignature), wantErr: true},
		{name: "JSON null payload", token: encodeTestJWT(jwtHeaderHS256, `null`, jwtFakeSignature), wantErr: true},
		{name: "JSON number payload", token: encodeTestJWT(jwtHeaderHS256, `1700000000`, jwtFakeSignature), wantErr: true},
		{name: "payload with trailing data", token: encodeTestJWT(jwtHeaderHS256, `{"exp":1700000000}x`, jwtFakeSignature), wantErr: true},
		{name: "payload not base64", token: "eyJhbGciOiJIUzI1NiJ9.***." + jwtFakeSignature, wantErr: true},
		{name: "two segments", token: strings.Join(strings.Split(encodeTestJWT(jwtHeaderHS256, payload, jwtFakeSignature), ".")[:2], "."), wantErr: true},
		{name: "five segments", token: encodeTestJWT(`{"alg":"RSA-OAEP","enc":"A256GCM"}`, payload, jwtFakeSignature) + ".aXY.dGFn", wantErr: true},
		{name: "four segments", token: encodeTestJWT(jwtHeaderHS256, payload, jwtFakeSignature) + ".extra", wantErr: true},
		{name: "garbage", token: "nk-test-not-a-jwt", wantErr: true},
		{name: "dots only", token: "..", wantErr: true},
		{name: "empty", token: "", wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := readTokenTimes(tc.token)
			if tc.wantErr {
				if err == nil {
					t.Errorf("readTokenTimes returned no error, want one for an unreadable payload")
				}
			} else if err != nil {
				t.Fatalf("readTokenTimes: %v", err)
			}
			if !got.expiresAt.Equal(tc.wantExp) {
				t.Errorf("expiresAt = %s, want %s", formatUnixSeconds(got.expiresAt), formatUnixSeconds(tc.wantExp))
			}
			if !got.issuedAt.Equal(tc.wantIat) {
				t.Errorf("issuedAt = %s, want %s", formatUnixSeconds(got.issuedAt), formatUnixSeconds(tc.wantIat))
			}
			if !got.expiresAt.IsZero() && got.expiresAt.Location() != time.UTC {
				t.Errorf("expiresAt location = %s, want UTC", got.expiresAt.Location())
			}
		})
	}
}

// referenceTimes is what a plain base64url and encoding/json decoder reads
// from a well-formed token: the exp and iat claims as float seconds, with ok
// false for an absent or unreadable claim.
type referenceTimes struct {
	exp, iat     float64
	expOK, iatOK bool
}

// decodeReference decodes token with encoding/base64 and encoding/json
// alone. It reports wellFormed false for a token that is not three
// dot-separated segments of base64url (unpadded or correctly padded) whose
// header is JSON and whose payload is a JSON object. Claim names match
// exactly, as RFC 7519 requires.
func decodeReference(token string) (times referenceTimes, wellFormed bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return referenceTimes{}, false
	}
	header, ok := decodeReferenceSegment(parts[0])
	if !ok {
		return referenceTimes{}, false
	}
	var headerFields map[string]any
	if json.Unmarshal(header, &headerFields) != nil {
		return referenceTimes{}, false
	}
	payload, ok := decodeReferenceSegment(parts[1])
	if !ok {
		return referenceTimes{}, false
	}
	var claims map[string]json.RawMessage
	if json.Unmarshal(payload, &claims) != nil || claims == nil {
		return referenceTimes{}, false
	}

	times.exp, times.expOK = referenceNumericDate(claims["exp"])
	times.iat, times.iatOK = referenceNumericDate(claims["iat"])
	return times, true
}

// decodeReferenceSegment decodes a base64url segment that is either unpadded or
// padded to a multiple of four characters.
func decodeReferenceSegment(segment string) ([]byte, bool) {
	unpadded := strings.TrimRight(segment, "=")
	padding := len(segment) - len(unpadded)
	if padding > 2 || (padding > 0 && len(segment)%4 != 0) {
		return nil, false
	}
	for _, c := range unpadded {
		isAlphabet := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !isAlphabet {
			return nil, false
		}
	}
	data, err := base64.RawURLEncoding.DecodeString(unpadded)
	return data, err == nil
}

// referenceNumericDate reads a NumericDate written as a JSON number or as a
// JSON string that holds exactly a JSON number, within the years 0001 to
// 9999 (in Unix seconds, at most 253402300799 either side of zero).
func referenceNumericDate(raw json.RawMessage) (float64, bool) {
	if raw == nil {
		return 0, false
	}
	decoder := json.NewDecoder(bytes.NewReader(raw))
	decoder.UseNumber()
	var value any
	if decoder.Decode(&value) != nil {
		return 0, false
	}

	var text string
	switch v := value.(type) {
	case json.Number:
		text = string(v)
	case string:
		isNumber := v != "" && strings.TrimSpace(v) == v && json.Valid([]byte(v)) && (v[0] == '-' || v[0] >= '0' && v[0] <= '9')
		if !isNumber {
			return 0, false
		}
		text = v
	default:
		return 0, false
	}

	seconds, err := strconv.ParseFloat(text, 64)
	if err != nil || math.Abs(seconds) > 253402300799 {
		return 0, false
	}
	return seconds, true
}

// sameUnixInstant reports whether got is within a microsecond of seconds after
// the Unix epoch.
func sameUnixInstant(got time.Time, seconds float64) bool {
	whole := math.Floor(seconds)
	diff := float64(got.Unix()-int64(whole)) + float64(got.Nanosecond())/1e9 - (seconds - whole)
	return math.Abs(diff) < 1e-6
}

func FuzzExpiry(f *testing.F) {
	for _, sample := range readJWTSamples(f) {
		f.Add(sample.token)
	}
	for _, seed := range []string{
		encodeTestJWT(jwtHeaderHS256, `{"exp":1700000000.5,"iat":"1699996400"}`, jwtFakeSignature),
		encodeTestJWT(`{"alg":"none"}`, "{\r\n\"exp\":null}", ""),
		encodeTestJWT(`{"alg":"ES256K"}`, `{"exp":1e300,"iat":-1}`, jwtFakeSignature),
		base64.URLEncoding.EncodeToString([]byte(`{"alg":"X"}`)) + "." + base64.URLEncoding.EncodeToString([]byte(`{"exp":"12"}`)) + ".",
		"a.b.c",
		"..",
		"",
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, token string) {
		got, err := readTokenTimes(token)
		if err != nil && (!got.expiresAt.IsZero() || !got.issuedAt.IsZero()) {
			t.Fatalf("readTokenTimes returned times together with the error %v", err)
		}

		want, wellFormed := decodeReference(token)
		if !wellFormed {
			return
		}
		if err != nil {
			t.Fatalf("readTokenTimes: %v, want no error for a well-formed token", err)
		}
		if want.expOK != !got.expiresAt.IsZero() {
			t.Fatalf("exp readable = %v, want %v", !got.expiresAt.IsZero(), want.expOK)
		}
		if want.expOK && !sameUnixInstant(got.expiresAt, want.exp) {
			t.Fatalf("expiresAt = %s, want %v", formatUnixSeconds(got.expiresAt), want.exp)
		}
		if want.iatOK != !got.issuedAt.IsZero() {
			t.Fatalf("iat readable = %v, want %v", !got.issuedAt.IsZero(), want.iatOK)
		}
		if want.iatOK && !sameUnixInstant(got.issuedAt, want.iat) {
			t.Fatalf("issuedAt = %s, want %v", formatUnixSeconds(got.issuedAt), want.iat)
		}
	})
}
