package norman

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Fake secrets for the Sensitive tests. They are long and distinctive, so a
// match in some output can only be a leak.
const (
	sensitiveSecretString = "nk-test-sensitive-5c1f0e9a7b3d"
	sensitiveSecretBytes  = "nk-test-sensitive-bytes-2e8d41"
	sensitiveSecretInt    = 918273645
)

// redactionVerbs are the fmt verbs that every type carrying a secret must be
// checked with.
var redactionVerbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"}

// extraRedactionVerbs are further verbs, flags and widths that Sensitive must also
// print as "<redacted>".
var extraRedactionVerbs = []string{"% x", "% X", "%#x", "%+q", "%#q", "%10v", "%-12s", "%o", "%b", "%e", "%c", "%U", "%t", "%g"}

// secretForms returns the ways that secret can show up in output. They are
// the secret as it is and Go-quoted, lower and upper case hexadecimal with
// and without spaces, the decimal bytes that %d prints for a byte slice, and
// standard and URL-safe base64, which encoding/json uses for byte slices.
// The keys describe each form without quoting it.
func secretForms(secret string) map[string]string {
	lowerHex := hex.EncodeToString([]byte(secret))
	spacedHex := fmt.Sprintf("% x", secret)
	decimal := strings.Trim(fmt.Sprint([]byte(secret)), "[]")
	return map[string]string{
		"as written":                  secret,
		"as lower case hex":           lowerHex,
		"as upper case hex":           strings.ToUpper(lowerHex),
		"as spaced lower case hex":    spacedHex,
		"as spaced upper case hex":    strings.ToUpper(spacedHex),
		"as decimal bytes":            decimal,
		"as standard base64":          strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(secret)), "="),
		"as URL-safe base64":          base64.RawURLEncoding.EncodeToString([]byte(secret)),
		"as Go-escaped quoted string": strconv.Quote(secret),
	}
}

// secretFormsCache maps a secret to its secretForms, which the redaction
// matrix would otherwise recompute for thousands of outputs.
var secretFormsCache sync.Map

func cachedSecretForms(secret string) map[string]string {
	if forms, ok := secretFormsCache.Load(secret); ok {
		return forms.(map[string]string)
	}
	forms, _ := secretFormsCache.LoadOrStore(secret, secretForms(secret))
	return forms.(map[string]string)
}

// maskSecrets replaces every form of each secret in s with the secret's
// description in brackets, so that a failure message can quote output
// without printing a secret.
func maskSecrets(s string, secrets map[string]string) string {
	for name, secret := range secrets {
		if secret == "" {
			continue
		}
		for _, text := range cachedSecretForms(secret) {
			s = strings.ReplaceAll(s, text, "["+name+"]")
		}
	}
	return s
}

// checkNoSecret reports an error for every secret, in any of its forms,
// that output contains. secrets maps a description, such as "the API key",
// to the secret. Failure messages name the secret and never quote it.
func checkNoSecret(t *testing.T, where, output string, secrets map[string]string) {
	t.Helper()
	for name, secret := range secrets {
		if secret == "" {
			t.Fatalf("%s: %s is empty, so the check would pass for any output", where, name)
		}
		for form, text := range cachedSecretForms(secret) {
			if strings.Contains(output, text) {
				t.Errorf("%s: output contains %s %s", where, name, form)
			}
		}
	}
}

var sensitiveTestSecrets = map[string]string{
	"the string secret": sensitiveSecretString,
	"the byte secret":   sensitiveSecretBytes,
	"the int secret":    strconv.Itoa(sensitiveSecretInt),
}

// secretHolders returns v on its own and inside the containers through
// which fmt, log/slog and encoding/json may reach it. The containers are a
// pointer, exported and unexported struct fields, both typed and as
// interfaces, a slice, an array, a map value and a slice of structs.
func secretHolders[T any](v T) map[string]any {
	return map[string]any{
		"value":                       v,
		"pointer":                     &v,
		"exported field":              struct{ Field T }{v},
		"unexported field":            struct{ field T }{v},
		"exported interface field":    struct{ Field any }{v},
		"unexported interface field":  struct{ field any }{v},
		"pointer to unexported field": &struct{ field T }{v},
		"slice":                       []T{v},
		"array":                       [1]T{v},
		"map value":                   map[string]T{"key": v},
		"slice of structs":            []struct{ Field T }{{v}},
		"nested unexported fields":    struct{ outer struct{ inner T } }{struct{ inner T }{v}},
	}
}

func TestSensitiveFormatVerbs(t *testing.T) {
	t.Parallel()

	str := NewSensitive(sensitiveSecretString)
	byteSlice := NewSensitive([]byte(sensitiveSecretBytes))
	number := NewSensitive(sensitiveSecretInt)
	values := map[string]any{
		"Sensitive[string]":  str,
		"Sensitive[[]byte]":  byteSlice,
		"Sensitive[int]":     number,
		"*Sensitive[string]": &str,
		"*Sensitive[[]byte]": &byteSlice,
		"*Sensitive[int]":    &number,
	}

	for name, value := range values {
		for _, verb := range append(append([]string{}, redactionVerbs...), extraRedactionVerbs...) {
			got := fmt.Sprintf(verb, value)
			where := fmt.Sprintf("Sprintf(%q, %s)", verb, name)
			checkNoSecret(t, where, got, sensitiveTestSecrets)
			if got != redacted {
				t.Errorf("%s = %q, want %q", where, maskSecrets(got, sensitiveTestSecrets), redacted)
			}
		}
	}
}

func TestSensitiveFormatPointerVerb(t *testing.T) {
	t.Parallel()

	str := NewSensitive(sensitiveSecretString)
	for name, value := range map[string]any{"Sensitive[string]": str, "*Sensitive[string]": &str} {
		got := fmt.Sprintf("%p", value)
		checkNoSecret(t, "Sprintf(%p, "+name+")", got, sensitiveTestSecrets)
	}
}

func TestSensitiveInContainers(t *testing.T) {
	t.Parallel()

	cases := map[string]map[string]any{
		"Sensitive[string]": secretHolders(NewSensitive(sensitiveSecretString)),
		"Sensitive[[]byte]": secretHolders(NewSensitive([]byte(sensitiveSecretBytes))),
		"Sensitive[int]":    secretHolders(NewSensitive(sensitiveSecretInt)),
	}
	for typeName, containers := range cases {
		for container, value := range containers {
			for _, verb := range redactionVerbs {
				got := fmt.Sprintf(verb, value)
				checkNoSecret(t, fmt.Sprintf("Sprintf(%q, %s in %s)", verb, typeName, container), got, sensitiveTestSecrets)
			}
		}
	}
}

func TestSensitiveInMapKey(t *testing.T) {
	t.Parallel()

	m := map[Sensitive[string]]int{NewSensitive(sensitiveSecretString): 1}
	for _, verb := range redactionVerbs {
		got := fmt.Sprintf(verb, m)
		checkNoSecret(t, fmt.Sprintf("Sprintf(%q, map with a Sensitive key)", verb), got, sensitiveTestSecrets)
		if !strings.Contains(got, redacted) {
			t.Errorf("Sprintf(%q, map with a Sensitive key) = %q, want it to contain %q", verb, maskSecrets(got, sensitiveTestSecrets), redacted)
		}
	}

	out, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("json.Marshal(map with a Sensitive key): %v", err)
	}
	checkNoSecret(t, "json.Marshal(map with a Sensitive key)", string(out), sensitiveTestSecrets)
	if diff := cmp.Diff(map[string]any{redacted: 1.0}, decodeJSONValue(t, out)); diff != "" {
		t.Errorf("json.Marshal(map with a Sensitive key) mismatch (-want +got):\n%s", maskSecrets(diff, sensitiveTestSecrets))
	}
}

// decodeJSONValue decodes data into a generic value, so that tests compare JSON
// output independently of the HTML escaping that json.Marshal applies to
// "<" and ">".
func decodeJSONValue(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("output is not valid JSON: %v", err)
	}
	return v
}

func TestSensitiveMethodsRedact(t *testing.T) {
	t.Parallel()

	s := NewSensitive(sensitiveSecretString)
	marshalledJSON, err := s.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	marshalledText, err := s.MarshalText()
	if err != nil {
		t.Fatalf("MarshalText: %v", err)
	}

	cases := []struct {
		method string
		got    string
		want   string
	}{
		{"String", s.String(), redacted},
		{"GoString", s.GoString(), redacted},
		{"MarshalJSON", string(marshalledJSON), `"<redacted>"`},
		{"MarshalText", string(marshalledText), redacted},
		{"LogValue", s.LogValue().String(), redacted},
		{"LogValue kind", s.LogValue().Kind().String(), slog.KindString.String()},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s() = %q, want %q", tc.method, maskSecrets(tc.got, sensitiveTestSecrets), tc.want)
		}
	}
}

func TestSensitiveMarshalJSON(t *testing.T) {
	t.Parallel()

	type request struct {
		APIKey   Sensitive[string] `json:"api_key"`
		Blob     Sensitive[[]byte] `json:"blob"`
		Optional Sensitive[string] `json:"optional,omitzero"`
		Pointer  *Sensitive[int]   `json:"pointer"`
		List     []Sensitive[string]
		ByName   map[string]Sensitive[string]
		hidden   Sensitive[string]
	}
	number := NewSensitive(sensitiveSecretInt)
	value := request{
		APIKey:  NewSensitive(sensitiveSecretString),
		Blob:    NewSensitive([]byte(sensitiveSecretBytes)),
		Pointer: &number,
		List:    []Sensitive[string]{NewSensitive(sensitiveSecretString)},
		ByName:  map[string]Sensitive[string]{"key": NewSensitive(sensitiveSecretString)},
		hidden:  NewSensitive(sensitiveSecretString),
	}

	out, err := json.Marshal(value)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	checkNoSecret(t, "json.Marshal", string(out), sensitiveTestSecrets)
	want := map[string]any{
		"api_key": redacted,
		"blob":    redacted,
		"pointer": redacted,
		"List":    []any{redacted},
		"ByName":  map[string]any{"key": redacted},
	}
	if diff := cmp.Diff(want, decodeJSONValue(t, out)); diff != "" {
		t.Errorf("json.Marshal mismatch (-want +got):\n%s", maskSecrets(diff, sensitiveTestSecrets))
	}

	value.Optional = NewSensitive("nk-test-optional")
	out, err = json.Marshal(value)
	if err != nil {
		t.Fatalf("json.Marshal with the omitzero field set: %v", err)
	}
	want["optional"] = redacted
	if diff := cmp.Diff(want, decodeJSONValue(t, out)); diff != "" {
		t.Errorf("json.Marshal with the omitzero field set mismatch (-want +got):\n%s", maskSecrets(diff, sensitiveTestSecrets))
	}
}

func TestSensitiveUnmarshalJSON(t *testing.T) {
	t.Parallel()

	t.Run("string", func(t *testing.T) {
		t.Parallel()
		var s Sensitive[string]
		if err := json.Unmarshal([]byte(`"`+sensitiveSecretString+`"`), &s); err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		if s.Value() != sensitiveSecretString {
			t.Error("Value() after Unmarshal is not the decoded secret")
		}
	})

	t.Run("bytes from base64", func(t *testing.T) {
		t.Parallel()
		var s Sensitive[[]byte]
		encoded := base64.StdEncoding.EncodeToString([]byte(sensitiveSecretBytes))
		if err := json.Unmarshal([]byte(`"`+encoded+`"`), &s); err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		if string(s.Value()) != sensitiveSecretBytes {
			t.Error("Value() after Unmarshal is not the decoded secret")
		}
	})

	t.Run("int", func(t *testing.T) {
		t.Parallel()
		var s Sensitive[int]
		if err := json.Unmarshal([]byte(strconv.Itoa(sensitiveSecretInt)), &s); err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		if s.Value() != sensitiveSecretInt {
			t.Error("Value() after Unmarshal is not the decoded secret")
		}
	})

	t.Run("null", func(t *testing.T) {
		t.Parallel()
		s := NewSensitive("nk-test-previous")
		if err := s.UnmarshalJSON([]byte("null")); err != nil {
			t.Fatalf("UnmarshalJSON(null): %v", err)
		}
		if !s.IsZero() {
			t.Errorf("IsZero() after UnmarshalJSON(null) = false, want true")
		}
	})

	t.Run("struct field", func(t *testing.T) {
		t.Parallel()
		var body struct {
			APIKey Sensitive[string] `json:"api_key"`
		}
		if err := json.Unmarshal([]byte(`{"api_key": "`+sensitiveSecretString+`"}`), &body); err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		if body.APIKey.Value() != sensitiveSecretString {
			t.Error("APIKey.Value() after Unmarshal is not the decoded secret")
		}
	})
}

func TestSensitiveUnmarshalJSONErrorHidesInput(t *testing.T) {
	t.Parallel()

	const secretNumber = "80417263549"
	cases := []struct {
		name   string
		decode func() error
		secret string
	}{
		{
			name:   "number into string",
			decode: func() error { var s Sensitive[string]; return s.UnmarshalJSON([]byte(secretNumber)) },
			secret: secretNumber,
		},
		{
			name: "object into string",
			decode: func() error {
				var s Sensitive[string]
				return s.UnmarshalJSON([]byte(`{"key":"` + sensitiveSecretString + `"}`))
			},
			secret: sensitiveSecretString,
		},
		{
			name: "string into int",
			decode: func() error {
				var s Sensitive[int]
				return s.UnmarshalJSON([]byte(`"` + sensitiveSecretString + `"`))
			},
			secret: sensitiveSecretString,
		},
		{
			name: "invalid base64 into bytes",
			decode: func() error {
				var s Sensitive[[]byte]
				return s.UnmarshalJSON([]byte(`"` + sensitiveSecretString + `!"`))
			},
			secret: sensitiveSecretString,
		},
		{
			name: "number in a struct field",
			decode: func() error {
				var body struct {
					APIKey Sensitive[string] `json:"api_key"`
				}
				return json.Unmarshal([]byte(`{"api_key": `+secretNumber+`}`), &body)
			},
			secret: secretNumber,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.decode()
			if err == nil {
				t.Fatal("decoding succeeded, want an error")
			}
			checkNoSecret(t, "error", err.Error(), map[string]string{"the input": tc.secret})
		})
	}
}

func TestSensitiveValue(t *testing.T) {
	t.Parallel()

	if got := NewSensitive(sensitiveSecretString).Value(); got != sensitiveSecretString {
		t.Error("NewSensitive(secret).Value() is not the secret")
	}
	if got := string(NewSensitive([]byte(sensitiveSecretBytes)).Value()); got != sensitiveSecretBytes {
		t.Error("NewSensitive([]byte(secret)).Value() is not the secret")
	}
	var zeroString Sensitive[string]
	if got := zeroString.Value(); got != "" {
		t.Errorf("zero Sensitive[string].Value() = %q, want \"\"", got)
	}
	var zeroBytes Sensitive[[]byte]
	if got := zeroBytes.Value(); got != nil {
		t.Errorf("zero Sensitive[[]byte].Value() = %v, want nil", got)
	}
	var zeroMap Sensitive[map[string]int]
	if got := zeroMap.Value(); got != nil {
		t.Errorf("zero Sensitive[map[string]int].Value() = %v, want nil", got)
	}
}

func TestSensitiveIsZero(t *testing.T) {
	t.Parallel()

	cases := []struct {
		name string
		got  bool
		want bool
	}{
		{"zero Sensitive[string]", Sensitive[string]{}.IsZero(), true},
		{"empty string", NewSensitive("").IsZero(), true},
		{"non-empty string", NewSensitive(sensitiveSecretString).IsZero(), false},
		{"whitespace string", NewSensitive(" ").IsZero(), false},
		{"zero Sensitive[[]byte]", Sensitive[[]byte]{}.IsZero(), true},
		{"nil bytes", NewSensitive([]byte(nil)).IsZero(), true},
		{"empty non-nil bytes", NewSensitive([]byte{}).IsZero(), false},
		{"non-empty bytes", NewSensitive([]byte(sensitiveSecretBytes)).IsZero(), false},
		{"zero int", NewSensitive(0).IsZero(), true},
		{"non-zero int", NewSensitive(sensitiveSecretInt).IsZero(), false},
		{"nil interface", NewSensitive[any](nil).IsZero(), true},
		{"interface holding an empty string", NewSensitive[any]("").IsZero(), false},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("IsZero() for %s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestSensitiveEqual(t *testing.T) {
	t.Parallel()

	type pair struct {
		ID  int
		Tag string
	}
	cases := []struct {
		name string
		got  bool
		want bool
	}{
		{"same string", NewSensitive("nk-test-a").Equal(NewSensitive("nk-test-a")), true},
		{"different strings of equal length", NewSensitive("nk-test-a").Equal(NewSensitive("nk-test-b")), false},
		{"string and its prefix", NewSensitive("nk-test-abc").Equal(NewSensitive("nk-test-ab")), false},
		{"zero and empty string", Sensitive[string]{}.Equal(NewSensitive("")), true},
		{"zero and non-empty string", Sensitive[string]{}.Equal(NewSensitive("nk-test-a")), false},
		{"same bytes", NewSensitive([]byte("nk-test-a")).Equal(NewSensitive([]byte("nk-test-a"))), true},
		{"different bytes", NewSensitive([]byte("nk-test-a")).Equal(NewSensitive([]byte("nk-test-b"))), false},
		{"nil and empty bytes", NewSensitive([]byte(nil)).Equal(NewSensitive([]byte{})), true},
		{"same int", NewSensitive(7).Equal(NewSensitive(7)), true},
		{"different ints", NewSensitive(7).Equal(NewSensitive(8)), false},
		{"same struct", NewSensitive(pair{1, "a"}).Equal(NewSensitive(pair{1, "a"})), true},
		{"different structs", NewSensitive(pair{1, "a"}).Equal(NewSensitive(pair{1, "b"})), false},
		{"same map", NewSensitive(map[string]int{"a": 1}).Equal(NewSensitive(map[string]int{"a": 1})), true},
		{"different maps", NewSensitive(map[string]int{"a": 1}).Equal(NewSensitive(map[string]int{"a": 2})), false},
		{"copy", func() bool { s := NewSensitive("nk-test-a"); c := s; return c.Equal(s) }(), true},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("Equal for %s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

// TestSensitiveEqualInterfaceType checks Sensitive[T] for an interface T,
// where the two values may hold different dynamic types.
func TestSensitiveEqualInterfaceType(t *testing.T) {
	t.Parallel()

	cases := []struct {
		name  string
		a, b  Sensitive[any]
		want  bool
		bytes bool
	}{
		{name: "same string", a: NewSensitive[any]("nk-test-a"), b: NewSensitive[any]("nk-test-a"), want: true},
		{name: "string and int", a: NewSensitive[any]("nk-test-a"), b: NewSensitive[any](1), want: false},
		{name: "string and nil", a: NewSensitive[any]("nk-test-a"), b: NewSensitive[any](nil), want: false},
		{name: "bytes and string", a: NewSensitive[any]([]byte("nk-test-a")), b: NewSensitive[any]("nk-test-a"), want: false},
		{name: "nil and string", a: NewSensitive[any](nil), b: NewSensitive[any]("nk-test-a"), want: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, panicked := equalOrPanic(tc.a, tc.b)
			if panicked {
				t.Fatal("Equal panicked, want it to return false for values of different dynamic types")
			}
			if got != tc.want {
				t.Errorf("Equal = %v, want %v", got, tc.want)
			}
		})
	}
}

func equalOrPanic[T any](a, b Sensitive[T]) (equal, panicked bool) {
	defer func() {
		if recover() != nil {
			panicked = true
		}
	}()
	return a.Equal(b), false
}

type cmpCredentials struct {
	User   string
	APIKey Sensitive[string]
}

func TestSensitiveCmpEqual(t *testing.T) {
	t.Parallel()

	a := cmpCredentials{User: "alice", APIKey: NewSensitive("nk-test-same")}
	b := cmpCredentials{User: "alice", APIKey: NewSensitive("nk-test-same")}
	c := cmpCredentials{User: "alice", APIKey: NewSensitive("nk-test-other")}

	if !cmp.Equal(a, b) {
		t.Error("cmp.Equal of structs holding equal secrets in separate Sensitive values = false, want true")
	}
	if cmp.Equal(a, c) {
		t.Error("cmp.Equal of structs holding different secrets = true, want false")
	}
	if !cmp.Equal(NewSensitive([]byte("nk-test-same")), NewSensitive([]byte("nk-test-same"))) {
		t.Error("cmp.Equal of equal Sensitive[[]byte] values = false, want true")
	}
}

func TestSensitiveCmpDiffHidesSecret(t *testing.T) {
	t.Parallel()

	const secretA = "nk-test-diff-left-7f3e21"
	const secretB = "nk-test-diff-right-0a94cd"
	cases := []struct {
		name string
		a, b any
	}{
		{
			name: "struct field",
			a:    cmpCredentials{User: "alice", APIKey: NewSensitive(secretA)},
			b:    cmpCredentials{User: "alice", APIKey: NewSensitive(secretB)},
		},
		{
			name: "pointer to struct",
			a:    &cmpCredentials{User: "alice", APIKey: NewSensitive(secretA)},
			b:    &cmpCredentials{User: "alice", APIKey: NewSensitive(secretB)},
		},
		{
			name: "bare value",
			a:    NewSensitive(secretA),
			b:    NewSensitive(secretB),
		},
		{
			name: "byte slice",
			a:    NewSensitive([]byte(secretA)),
			b:    NewSensitive([]byte(secretB)),
		},
		{
			name: "slice",
			a:    []Sensitive[string]{NewSensitive(secretA)},
			b:    []Sensitive[string]{NewSensitive(secretB)},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			diff := cmp.Diff(tc.a, tc.b)
			if diff == "" {
				t.Fatal("cmp.Diff of values holding different secrets is empty, want a difference")
			}
			checkNoSecret(t, "cmp.Diff", diff, map[string]string{"the left secret": secretA, "the right secret": secretB})
		})
	}
}

func TestSensitiveSlog(t *testing.T) {
	t.Parallel()

	type loginRequest struct {
		User   string
		APIKey Sensitive[string]
		token  Sensitive[string]
	}
	str := NewSensitive(sensitiveSecretString)
	request := loginRequest{User: "alice", APIKey: str, token: str}
	attrs := []slog.Attr{
		slog.Any("sensitive", str),
		slog.Any("pointer", &str),
		slog.Any("bytes", NewSensitive([]byte(sensitiveSecretBytes))),
		slog.Any("int", NewSensitive(sensitiveSecretInt)),
		slog.Any("struct", request),
		slog.Any("struct_pointer", &request),
		slog.Any("slice", []Sensitive[string]{str}),
		slog.Any("map", map[string]Sensitive[string]{"key": str}),
		slog.Group("group", slog.Any("sensitive", str)),
	}

	handlers := map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"JSON": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	}
	for name, newHandler := range handlers {
		var buf bytes.Buffer
		logger := slog.New(newHandler(&buf))
		for _, attr := range attrs {
			logger.LogAttrs(t.Context(), slog.LevelInfo, "login", attr)
			logger.Info("login", attr.Key, attr.Value.Any())
		}
		logger.With("sensitive", str).Info("with")

		out := buf.String()
		checkNoSecret(t, name+" handler", out, sensitiveTestSecrets)
		if got, want := strings.Count(out, redacted), 2*len(attrs); got < want {
			t.Errorf("%s handler output contains %q %d times, want at least %d", name, redacted, got, want)
		}
	}
}
