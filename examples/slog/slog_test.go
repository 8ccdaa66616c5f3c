package slog_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	norman "github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/normantest"
)

// TestRecordsHoldNoSecret runs the scenario of the example and checks that
// every record is a JSON object in which no API key or token appears.
func TestRecordsHoldNoSecret(t *testing.T) {
	srv := normantest.NewServer()
	defer srv.Close()
	srv.AddAccount("alice", "nk-test-alice")

	var out bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mgr := norman.NewManager(
		norman.WithBaseURL(srv.URL),
		norman.WithAPIKey("nk-test-alice"),
		norman.WithLogger(logger),
	)
	client := &http.Client{Transport: norman.NewTransport(mgr, nil)}
	secrets := []string{"nk-test-alice", "nk-test-unknown"}
	get := func() {
		t.Helper()
		resp, err := client.Post(srv.URL+"/authenticate/accounts/get", "application/json", nil)
		if err == nil {
			resp.Body.Close()
		}
		for _, token := range []func() (norman.Sensitive[string], error){mgr.AccessToken, mgr.IDToken} {
			if s, err := token(); err == nil && !s.IsZero() {
				secrets = append(secrets, s.Value())
			}
		}
	}

	srv.FailLogins(1, http.StatusServiceUnavailable)
	get()
	srv.RevokeTokens()
	get()
	mgr.SetAPIKey("nk-test-unknown")
	get()

	records := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(records) != 6 {
		t.Errorf("got %d records, want 6", len(records))
	}
	for i, record := range records {
		var fields map[string]any
		if err := json.Unmarshal([]byte(record), &fields); err != nil {
			t.Errorf("record %d is not a JSON object: %v", i+1, err)
		}
		for _, secret := range secrets {
			if strings.Contains(record, secret) {
				// The record is not printed, because it contains the secret.
				t.Errorf("record %d (%v) contains an API key or a token", i+1, fields["msg"])
			}
		}
	}
	if len(secrets) != 6 {
		t.Errorf("collected %d secrets, want 6: two keys and two logins' tokens", len(secrets))
	}
}
