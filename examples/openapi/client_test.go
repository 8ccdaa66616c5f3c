package openapi_test

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	norman "github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/examples/openapi"
	"github.com/norman-ml/norman-go/normantest"
)

// quiet discards the manager's log records, which the tests do not check.
var quiet = slog.New(slog.DiscardHandler)

// created is the server clock in these tests, and so the creation time of
// their accounts.
var created = time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)

func newServer(t *testing.T) (srv *normantest.Server, accountID string) {
	t.Helper()
	srv = normantest.NewServer()
	t.Cleanup(srv.Close)
	srv.SetClock(func() time.Time { return created })
	return srv, srv.AddAccount("alice", "nk-test-alice")
}

func newManager(srv *normantest.Server, key string) *norman.Manager {
	return norman.NewManager(
		norman.WithBaseURL(srv.URL),
		norman.WithAPIKey(key),
		norman.WithClock(func() time.Time { return created }),
		norman.WithLogger(quiet),
	)
}

func TestGetAccounts(t *testing.T) {
	// The generated client must keep the /v0 of the base URL, with or
	// without a trailing slash.
	for name, suffix := range map[string]string{"without trailing slash": "", "with trailing slash": "/"} {
		t.Run(name, func(t *testing.T) {
			srv, accountID := newServer(t)
			mgr := newManager(srv, "nk-test-alice")

			client, err := openapi.NewClientWithResponses(srv.URL+suffix,
				openapi.WithHTTPClient(&http.Client{Transport: norman.NewTransport(mgr, nil)}))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.GetAccountsWithResponse(context.Background())
			if err != nil {
				t.Fatalf("GetAccounts: %v", err)
			}
			if resp.JSON200 == nil {
				t.Fatalf("GetAccounts: status %d, body %q; want 200 with accounts", resp.StatusCode(), resp.Body)
			}
			accounts := *resp.JSON200
			got, ok := accounts[accountID]
			if len(accounts) != 1 || !ok || got.ID != accountID || got.Name != "alice" || !got.CreationTime.Equal(created) {
				t.Errorf("accounts = %+v, want only alice's account %s, created at %v", accounts, accountID, created)
			}
			if got := srv.Logins(); got != 1 {
				t.Errorf("logins = %d, want 1", got)
			}
		})
	}
}

// authRecorder is a base transport that records the Authorization header
// of each request it sends.
type authRecorder struct {
	mu     sync.Mutex
	values [][]string
}

func (r *authRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.values = append(r.values, req.Header.Values("Authorization"))
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func TestRequestEditorAuthorizationIsReplaced(t *testing.T) {
	srv, _ := newServer(t)
	mgr := newManager(srv, "nk-test-alice")
	recorder := &authRecorder{}

	editorCalls := 0
	client, err := openapi.NewClientWithResponses(srv.URL,
		openapi.WithHTTPClient(&http.Client{Transport: norman.NewTransport(mgr, recorder)}),
		openapi.WithRequestEditorFn(func(_ context.Context, req *http.Request) error {
			editorCalls++
			req.Header.Set("Authorization", "Bearer set-by-a-request-editor")
			return nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.GetAccountsWithResponse(context.Background())
	if err != nil {
		t.Fatalf("GetAccounts: %v", err)
	}
	if resp.StatusCode() != http.StatusOK {
		t.Errorf("GetAccounts: status %d, want 200: the server accepted the manager's token", resp.StatusCode())
	}
	if editorCalls != 1 {
		t.Errorf("the request editor ran %d times, want 1", editorCalls)
	}

	token, err := mgr.AccessToken()
	if err != nil {
		t.Fatal(err)
	}
	recorder.mu.Lock()
	defer recorder.mu.Unlock()
	if len(recorder.values) != 1 {
		t.Fatalf("the base transport sent %d requests, want 1", len(recorder.values))
	}
	// The values are compared, never printed, because one is a token.
	if got := recorder.values[0]; !slices.Equal(got, []string{"Bearer " + token.Value()}) {
		t.Errorf("the request carried %d Authorization values; want exactly one, the manager's token (editor's value present: %t)",
			len(got), slices.Contains(got, "Bearer set-by-a-request-editor"))
	}
}

// TestServerURL shows how the generated code joins paths onto the server
// URL. NewClient adds a missing trailing slash, so the version is kept. The
// request builders, called on their own, add none, so they drop the last
// path segment of a server URL without one, as url.ResolveReference does.
func TestServerURL(t *testing.T) {
	const want = "https://api.example.com/v0/authenticate/accounts/get"
	for _, base := range []string{"https://api.example.com/v0", "https://api.example.com/v0/"} {
		client, err := openapi.NewClient(base)
		if err != nil {
			t.Fatal(err)
		}
		req, err := openapi.NewGetAccountsRequest(client.Server)
		if err != nil {
			t.Fatal(err)
		}
		if got := req.URL.String(); got != want {
			t.Errorf("NewClient(%q): request URL %q, want %q", base, got, want)
		}
	}

	req, err := openapi.NewGetAccountsRequest("https://api.example.com/v0")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := req.URL.String(), "https://api.example.com/authenticate/accounts/get"; got != want {
		t.Errorf("NewGetAccountsRequest without a trailing slash: URL %q, want %q", got, want)
	}
}

// TestWireProtocol checks openapi.yaml against the local server: the
// generated login and signup calls, sent without a norman.Transport, decode
// the server's responses, and a rejected key decodes as a Norman error.
func TestWireProtocol(t *testing.T) {
	srv, accountID := newServer(t)
	ctx := context.Background()
	client, err := openapi.NewClientWithResponses(srv.URL, openapi.WithHTTPClient(srv.Client()))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("signup", func(t *testing.T) {
		resp, err := client.SignupWithKeyWithResponse(ctx, openapi.SignupKeyRequest{Name: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil {
			t.Fatalf("status %d, want 200 with a signup response", resp.StatusCode())
		}
		if got := resp.JSON200.Account; got.Name != "bob" || got.ID == "" || !got.CreationTime.Equal(created) {
			t.Errorf("account = %+v, want bob created at %v", got, created)
		}
		if resp.JSON200.ApiKey.IsZero() {
			t.Error("the response has no API key")
		}
	})

	t.Run("login", func(t *testing.T) {
		resp, err := client.LoginWithKeyWithResponse(ctx, openapi.LoginKeyRequest{ApiKey: "nk-test-alice"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.JSON200 == nil {
			t.Fatalf("status %d, want 200 with a login response", resp.StatusCode())
		}
		got := resp.JSON200
		if got.AccessToken.IsZero() || got.IdToken.IsZero() {
			t.Errorf("access token set: %t, ID token set: %t; want both", !got.AccessToken.IsZero(), !got.IdToken.IsZero())
		}
		if got.Account == nil || got.Account.ID != accountID {
			t.Errorf("account = %+v, want ID %q", got.Account, accountID)
		}
	})

	t.Run("rejected key", func(t *testing.T) {
		resp, err := client.LoginWithKeyWithResponse(ctx, openapi.LoginKeyRequest{ApiKey: "nk-test-wrong"})
		if err != nil {
			t.Fatal(err)
		}
		e := resp.JSON401
		if e == nil {
			t.Fatalf("status %d, want 401 with a Norman error", resp.StatusCode())
		}
		if e.StatusCode == nil || *e.StatusCode != http.StatusUnauthorized || e.Message == nil || e.Timestamp == nil {
			t.Errorf("error = %+v, want status_code 401, a message and a timestamp", e)
		}
	})
}
