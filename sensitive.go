package norman

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"reflect"
)

// redacted is the text that replaces every printed, logged or marshalled secret.
const redacted = "<redacted>"

// Sensitive holds a secret, such as an API key or a token, and keeps it out of
// output: it formats, logs and marshals as "<redacted>", and [Sensitive.Value]
// is the only way to read it.
//
// The value is captured in a function behind a pointer. Code that prints a
// Sensitive by reflection without calling its methods, as fmt does for
// unexported struct fields and go-cmp does in diffs, reaches only a function
// value, which prints as an address.
//
// The zero value holds the zero T. A Sensitive is immutable, comparable with
// == (by identity), and safe for concurrent use; copies share the same
// secret.
type Sensitive[T any] struct {
	box *secretBox[T]
}

type secretBox[T any] struct {
	value func() T
}

// NewSensitive returns a Sensitive holding value.
func NewSensitive[T any](value T) Sensitive[T] {
	return Sensitive[T]{box: &secretBox[T]{value: func() T { return value }}}
}

// Value returns the secret. Call it only where the secret must leave the
// program, such as when setting a request header.
func (s Sensitive[T]) Value() T {
	if s.box == nil {
		var zero T
		return zero
	}
	return s.box.value()
}

// IsZero reports whether s holds the zero value of T, so that
// `json:",omitzero"` and callers can tell a missing secret from a set one.
func (s Sensitive[T]) IsZero() bool {
	if s.box == nil {
		return true
	}
	value := s.box.value()
	return reflect.ValueOf(&value).Elem().IsZero()
}

// Equal reports whether s and other hold equal secrets. It compares values
// whose kind is string or byte slice in constant time, treating nil and
// empty byte slices as equal, and other types with [reflect.DeepEqual]. [github.com/google/go-cmp/cmp] uses this method to
// compare Sensitive values.
func (s Sensitive[T]) Equal(other Sensitive[T]) bool {
	a, b := s.Value(), other.Value()
	va, vb := reflect.ValueOf(&a).Elem(), reflect.ValueOf(&b).Elem()
	if va.Kind() == reflect.Interface {
		va, vb = va.Elem(), vb.Elem()
		if !va.IsValid() || !vb.IsValid() || va.Type() != vb.Type() {
			return va.IsValid() == vb.IsValid() && !va.IsValid()
		}
	}

	switch {
	case va.Kind() == reflect.String:
		return subtle.ConstantTimeCompare([]byte(va.String()), []byte(vb.String())) == 1
	case va.Kind() == reflect.Slice && va.Type().Elem().Kind() == reflect.Uint8:
		return subtle.ConstantTimeCompare(va.Bytes(), vb.Bytes()) == 1
	}
	return reflect.DeepEqual(a, b)
}

// String returns "<redacted>".
func (s Sensitive[T]) String() string { return redacted }

// GoString returns "<redacted>", so that %#v hides the secret too.
func (s Sensitive[T]) GoString() string { return redacted }

// Format writes "<redacted>" for every verb, including %x, %q and %d, which
// would otherwise bypass String.
func (s Sensitive[T]) Format(f fmt.State, verb rune) {
	_, _ = io.WriteString(f, redacted)
}

// LogValue implements [slog.LogValuer]: a Sensitive logs as "<redacted>"
// whichever handler formats the record.
func (s Sensitive[T]) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON encodes s as the JSON string "<redacted>".
func (s Sensitive[T]) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "<redacted>", for encoders that use
// [encoding.TextMarshaler], such as map keys and XML.
func (s Sensitive[T]) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// UnmarshalJSON reads the plain JSON value of T into s, so that a response
// carrying a secret decodes straight into a Sensitive field.
func (s *Sensitive[T]) UnmarshalJSON(data []byte) error {
	var value T
	if err := json.Unmarshal(data, &value); err != nil {
		// The decoder's message can quote the input, which may be the secret.
		return fmt.Errorf("norman: cannot decode secret into %s: invalid JSON value", reflect.TypeFor[T]())
	}
	*s = NewSensitive(value)
	return nil
}
