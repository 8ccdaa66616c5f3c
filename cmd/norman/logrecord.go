package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// Messages of the norman package's log records that the commands react to.
// They must match the messages in the package's manager.go, login.go and
// transport.go.
const (
	msgLoggedIn      = "norman: logged in"
	msgLoginFailed   = "norman: login failed"
	msgLoginRetry    = "norman: login attempt failed; retrying"
	msgTokenRejected = "norman: API rejected the access token; logging in again"
	msgSignedUp      = "norman: signed up"
)

// logRecord is one record of the norman package's logger, with every
// attribute resolved and group names joined to keys with dots.
type logRecord struct {
	Time    time.Time
	Level   slog.Level
	Message string
	Attrs   []slog.Attr
}

func (r logRecord) value(key string) slog.Value {
	for _, a := range r.Attrs {
		if a.Key == key {
			return a.Value
		}
	}
	return slog.Value{}
}

// text returns the attribute key as text, or "" when the record has none.
func (r logRecord) text(key string) string {
	v := r.value(key)
	if v.Kind() == slog.KindAny && v.Any() == nil {
		return ""
	}
	return v.String()
}

// duration returns the attribute key, or 0 when it is not a duration.
func (r logRecord) duration(key string) time.Duration {
	if v := r.value(key); v.Kind() == slog.KindDuration {
		return v.Duration()
	}
	return 0
}

// time returns the attribute key, or the zero time when it is not a time.
func (r logRecord) time(key string) time.Time {
	if v := r.value(key); v.Kind() == slog.KindTime {
		return v.Time()
	}
	return time.Time{}
}

// recordHandler is a [slog.Handler] that passes each record at or above
// its level to a function, so that the commands can turn the norman
// package's records into their own output.
type recordHandler struct {
	level  slog.Level
	handle func(logRecord)
	attrs  []slog.Attr // from WithAttrs, already prefixed
	prefix string      // from WithGroup: group names, each followed by "."
}

func newRecordHandler(level slog.Level, handle func(logRecord)) *recordHandler {
	return &recordHandler{level: level, handle: handle}
}

func (h *recordHandler) Enabled(_ context.Context, level slog.Level) bool {
	return level >= h.level
}

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{Time: r.Time, Level: r.Level, Message: r.Message, Attrs: slices.Clone(h.attrs)}
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs = appendAttr(rec.Attrs, h.prefix, a)
		return true
	})
	h.handle(rec)
	return nil
}

func (h *recordHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	clone := *h
	clone.attrs = slices.Clone(h.attrs)
	for _, a := range attrs {
		clone.attrs = appendAttr(clone.attrs, h.prefix, a)
	}
	return &clone
}

func (h *recordHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	clone := *h
	clone.prefix += name + "."
	return &clone
}

// appendAttr resolves a and appends it to dst with prefix before its key,
// flattening groups as slog's handlers do.
func appendAttr(dst []slog.Attr, prefix string, a slog.Attr) []slog.Attr {
	a.Value = a.Value.Resolve()
	if a.Value.Kind() == slog.KindGroup {
		groupPrefix := prefix
		if a.Key != "" {
			groupPrefix += a.Key + "."
		}
		for _, member := range a.Value.Group() {
			dst = appendAttr(dst, groupPrefix, member)
		}
		return dst
	}
	if a.Equal(slog.Attr{}) {
		return dst
	}
	a.Key = prefix + a.Key
	return append(dst, a)
}

// formatRecord renders rec as one line of plain text: the message, then
// its attributes as key=value pairs in parentheses.
func formatRecord(rec logRecord) string {
	var b strings.Builder
	b.WriteString(rec.Message)
	for i, a := range rec.Attrs {
		if i == 0 {
			b.WriteString(" (")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(a.Key + "=" + formatValue(a.Value))
	}
	if len(rec.Attrs) > 0 {
		b.WriteString(")")
	}
	return b.String()
}

func formatValue(v slog.Value) string {
	switch v.Kind() {
	case slog.KindDuration:
		return roundDuration(v.Duration()).String()
	case slog.KindTime:
		return v.Time().UTC().Format(time.RFC3339)
	}
	return v.String()
}

// roundDuration rounds d to milliseconds, or to 10 ms above a second, which
// is as precise as the times the commands print.
func roundDuration(d time.Duration) time.Duration {
	if d > time.Second || d < -time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

// commandLog writes the norman package's records for a command that talks
// to a real API. Warnings, such as retried logins, go to w, except for a
// failed login, which the command reports as its error. With verbose,
// every record goes to w, including the debug record of each login.
//
// The package writes the record of a login just after it releases the
// login's callers, so a record can arrive after the command is done. Close
// stops the output, and later records are dropped.
type commandLog struct {
	w        io.Writer
	verbose  bool
	loggedIn chan logRecord // receives each login record after it is written, unless full

	mu     sync.Mutex
	closed bool
}

func newCommandLog(w io.Writer, verbose bool) *commandLog {
	return &commandLog{w: w, verbose: verbose, loggedIn: make(chan logRecord, 1)}
}

func (l *commandLog) logger() *slog.Logger {
	return slog.New(newRecordHandler(slog.LevelDebug, l.handle))
}

func (l *commandLog) handle(rec logRecord) {
	show := l.verbose || (rec.Level >= slog.LevelWarn && rec.Message != msgLoginFailed)
	l.mu.Lock()
	if show && !l.closed {
		fmt.Fprintln(l.w, formatRecord(rec))
	}
	l.mu.Unlock()

	if rec.Message == msgLoggedIn {
		select {
		case l.loggedIn <- rec:
		default:
		}
	}
}

// awaitLogin returns the record of the next successful login, waiting at
// most timeout for it.
func (l *commandLog) awaitLogin(timeout time.Duration) (logRecord, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case rec := <-l.loggedIn:
		return rec, true
	case <-timer.C:
		return logRecord{}, false
	}
}

// finish closes the log. After a successful command in verbose mode it
// first waits for the login record, so that the output shows the login.
func (l *commandLog) finish(succeeded bool) {
	if succeeded && l.verbose {
		l.awaitLogin(loginRecordWait)
	}
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}
