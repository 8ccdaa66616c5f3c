package norman

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"reflect"
)

// redacted is what every printed, logged or marshalled secret becomes.
const redacted = "<redacted>"

// Sensitive holds a secret, such as an API key or a token, and keeps it out of
// output: it formats, logs and marshals as "<redacted>", and [Sensitive.Value]
// is the only way to read it.
//
// The value sits behind a pointer, so a Sensitive inside an unexported struct
// field, where fmt prints fields by reflection instead of calling methods,
// shows as an address and not as the secret.
//
// The zero value holds the zero T. A Sensitive is immutable and safe for
// concurrent use; copies share the same secret.
type Sensitive[T any] struct {
	box *secretBox[T]
}

type secretBox[T any] struct {
	value T
}

// NewSensitive returns a Sensitive holding value.
func NewSensitive[T any](value T) Sensitive[T] {
	return Sensitive[T]{box: &secretBox[T]{value: value}}
}

// Value returns the secret. Call it only where the secret must leave the
// program, such as when setting a request header.
func (s Sensitive[T]) Value() T {
	if s.box == nil {
		var zero T
		return zero
	}
	return s.box.value
}

// IsZero reports whether s holds the zero value of T, so that
// `json:",omitzero"` and callers can tell a missing secret from a set one.
func (s Sensitive[T]) IsZero() bool {
	if s.box == nil {
		return true
	}
	return reflect.ValueOf(&s.box.value).Elem().IsZero()
}

// Equal reports whether s and other hold equal secrets. It compares strings
// and byte slices in constant time, and other types with [reflect.DeepEqual].
// [github.com/google/go-cmp/cmp] uses this method to compare Sensitive values.
func (s Sensitive[T]) Equal(other Sensitive[T]) bool {
	a, b := any(s.Value()), any(other.Value())
	switch a := a.(type) {
	case string:
		return subtle.ConstantTimeCompare([]byte(a), []byte(b.(string))) == 1
	case []byte:
		return subtle.ConstantTimeCompare(a, b.([]byte)) == 1
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
