package main

import (
	"regexp"
	"strings"
	"testing"
)

func TestLoginPrintsVerifiedClaims(t *testing.T) {
	srv, accountID, key, keyFile := startServer(t)
	tests := []struct {
		name string
		args []string
		env  string // NORMAN_JWKS_URL
	}{
		{"flag", []string{"login", "-api-key-file", keyFile, "-jwks-url", srv.JWKSURL()}, ""},
		{"environment", []string{"login", "-api-key-file", keyFile}, srv.JWKSURL()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NORMAN_JWKS_URL", tt.env)
			jwksBefore := srv.JWKSRequests()

			res := runNorman(t, tt.args...)

			if res.code != exitOK {
				t.Fatalf("login failed:\n%s", res)
			}
			for _, want := range []string{
				"Logged in as account " + accountID + ".\n",
				"The tokens passed verification against " + srv.JWKSURL() + ".\n",
				"  subject:  " + accountID + "\n",
				"  issuer:   " + srv.URL + "\n",
				"  audience: norman:client\n",
				"  name:     alice\n",
			} {
				if !strings.Contains(res.stdout, want) {
					t.Errorf("stdout does not contain %q:\n%s", want, res.stdout)
				}
			}
			if !regexp.MustCompile(`  expires:  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\n`).MatchString(res.stdout) {
				t.Errorf("stdout does not give the ID token's expiry:\n%s", res.stdout)
			}
			if got := srv.JWKSRequests() - jwksBefore; got != 1 {
				t.Errorf("got %d JWKS requests, want 1", got)
			}
			checkNoSecrets(t, res.stdout+res.stderr, key)
		})
	}
}

func TestLoginWithoutJWKSPrintsNoClaims(t *testing.T) {
	srv, _, _, keyFile := startServer(t)

	res := runNorman(t, "login", "-api-key-file", keyFile)

	if res.code != exitOK {
		t.Fatalf("login failed:\n%s", res)
	}
	if strings.Contains(res.stdout, "verification") || strings.Contains(res.stdout, "subject:") {
		t.Errorf("stdout mentions verification without -jwks-url or NORMAN_JWKS_URL:\n%s", res.stdout)
	}
	if got := srv.JWKSRequests(); got != 0 {
		t.Errorf("got %d JWKS requests without verification, want 0", got)
	}
}

func TestLoginRejectsUnpublishedKey(t *testing.T) {
	srv, _, key, keyFile := startServer(t)
	srv.SignWithUnpublishedKey(true)

	res := runNorman(t, "login", "-api-key-file", keyFile, "-jwks-url", srv.JWKSURL())

	if res.code != exitFailure {
		t.Errorf("exit status %d, want %d\n%s", res.code, exitFailure, res)
	}
	if want := "norman login: login: the access token failed verification (unknown kid): "; !strings.Contains(res.stderr, want) {
		t.Errorf("stderr does not contain %q:\n%s", want, res.stderr)
	}
	if strings.Contains(res.stdout, "Logged in") {
		t.Errorf("stdout reports a login:\n%s", res.stdout)
	}
	checkNoSecrets(t, res.stdout+res.stderr, key)
}

func TestLoginInsecureJWKSURL(t *testing.T) {
	_, _, _, keyFile := startServer(t)

	res := runNorman(t, "login", "-api-key-file", keyFile, "-jwks-url", "http://jwks.invalid/jwks.json")

	if res.code != exitUsage {
		t.Errorf("exit status %d, want %d\n%s", res.code, exitUsage, res)
	}
	if want := "insecure JWKS URL"; !strings.Contains(res.stderr, want) {
		t.Errorf("stderr does not contain %q:\n%s", want, res.stderr)
	}
}
