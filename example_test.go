package norman_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strings"

	norman "github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/normantest"
)

func ExampleNewTransport() {
	srv := normantest.NewServer()
	defer srv.Close()
	srv.AddAccount("alice", "nk-test-alice")

	mgr := norman.NewManager(
		norman.WithBaseURL(srv.URL),
		norman.WithAPIKey("nk-test-alice"),
		norman.WithHTTPClient(srv.Client()),
	)
	client := &http.Client{Transport: norman.NewTransport(mgr, srv.Client().Transport)}

	// The transport logs in on the first request and adds the access token.
	resp, err := client.Post(srv.URL+"/authenticate/accounts/get", "application/json", strings.NewReader("{}"))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()

	var accounts map[string]norman.Account
	if err := json.NewDecoder(resp.Body).Decode(&accounts); err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status)
	fmt.Println(accounts[mgr.AccountID()].Name)
	// Output:
	// 200 OK
	// alice
}

func ExampleSignupAndGenerateKey() {
	srv := normantest.NewServer()
	defer srv.Close()

	resp, err := norman.SignupAndGenerateKey(context.Background(), "alice",
		norman.WithBaseURL(srv.URL),
		norman.WithHTTPClient(srv.Client()),
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("account:", resp.Account.Name)
	fmt.Println("API key set:", !resp.APIKey.IsZero())

	// Printing the key, or the whole response with %v or %+v, shows
	// "<redacted>" in place of the key.
	fmt.Println("API key printed:", resp.APIKey)
	fmt.Println("response shows the key:", strings.Contains(fmt.Sprintf("%+v", resp), resp.APIKey.Value()))
	// Output:
	// account: alice
	// API key set: true
	// API key printed: <redacted>
	// response shows the key: false
}

func ExampleSensitive() {
	key := norman.NewSensitive("nk-test-example")

	fmt.Println(key)
	fmt.Printf("%q %x %#v\n", key, key, key)

	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false) // print "<" and ">" as they are, not as \u003c and \u003e
	if err := enc.Encode(struct {
		APIKey norman.Sensitive[string] `json:"api_key"`
	}{key}); err != nil {
		log.Fatal(err)
	}

	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{} // keep the output deterministic
			}
			return a
		},
	}))
	logger.Info("login", "api_key", key)

	// Value is the only way to read the secret, for example to set a header.
	fmt.Println(key.Value())
	// Output:
	// <redacted>
	// <redacted> <redacted> <redacted>
	// {"api_key":"<redacted>"}
	// level=INFO msg=login api_key=<redacted>
	// nk-test-example
}

func ExampleManager_Token() {
	srv := normantest.NewServer()
	defer srv.Close()
	accountID := srv.AddAccount("alice", "nk-test-alice")

	mgr := norman.NewManager(
		norman.WithBaseURL(srv.URL),
		norman.WithAPIKey("nk-test-alice"),
		norman.WithHTTPClient(srv.Client()),
	)

	// The first call logs in, and the second reuses the cached token.
	for range 2 {
		token, err := mgr.Token(context.Background())
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("token:", token, "set:", !token.IsZero())
	}
	fmt.Println("account matches:", mgr.AccountID() == accountID)
	fmt.Println("logins:", srv.Logins())
	// Output:
	// token: <redacted> set: true
	// token: <redacted> set: true
	// account matches: true
	// logins: 1
}
