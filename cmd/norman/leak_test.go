package main

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// TestCommandsLeaveNoGoroutines runs each command and checks that no
// goroutine outlives it once its server is closed. It does not run in
// parallel, so that no other test's goroutines come and go meanwhile.
func TestCommandsLeaveNoGoroutines(t *testing.T) {
	leftovers := goleak.IgnoreCurrent()
	// Registered before startServer, so that it runs after srv.Close.
	t.Cleanup(func() { goleak.VerifyNone(t, leftovers) })

	srv, _, _, keyFile := startServer(t)
	srv.Handle("echo", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
	}))

	for _, args := range [][]string{
		{"login", "-api-key-file", keyFile},
		{"token", "-api-key-file", keyFile},
		{"get", "-api-key-file", keyFile, "-d", `{"n":1}`, "echo"},
		{"demo", "-lifetime", "2s", "-lifetimes", "1"},
	} {
		if res := runNorman(t, args...); res.code != exitOK {
			t.Errorf("norman %s: exit status %d, want 0\nstderr:\n%s", args[0], res.code, res.stderr)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel() // serve returns as soon as it has started
	if code := run(ctx, []string{"serve", "-account", "leak", "-write-key", filepath.Join(t.TempDir(), "leak.key")}, io.Discard, io.Discard); code != exitOK {
		t.Errorf("norman serve: exit status %d, want 0", code)
	}
}
