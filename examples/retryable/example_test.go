package retryable_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"

	"github.com/hashicorp/go-retryablehttp"
	norman "github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/examples/retryable"
	"github.com/norman-ml/norman-go/normantest"
)

func ExampleNewClient() {
	srv := normantest.NewServer()
	defer srv.Close()
	srv.AddAccount("alice", "nk-test-alice")

	mgr := norman.NewManager(
		norman.WithBaseURL(srv.URL),
		norman.WithAPIKey("nk-test-alice"),
	)
	client := retryable.NewClient(mgr)
	client.Logger = nil // retryablehttp logs every request to standard error by default

	// Each attempt, the first and any retry, goes through the
	// norman.Transport, which logs in on the first one.
	req, err := retryablehttp.NewRequest(http.MethodPost, srv.URL+"/authenticate/accounts/get", []byte("{}"))
	if err != nil {
		log.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()

	var accounts map[string]norman.Account
	if err := json.NewDecoder(resp.Body).Decode(&accounts); err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status, accounts[mgr.AccountID()].Name)
	// Output:
	// 200 OK alice
}

func ExampleNewClient_rejectedKey() {
	srv := normantest.NewServer()
	defer srv.Close()
	srv.AddAccount("alice", "nk-test-alice")

	mgr := norman.NewManager(
		norman.WithBaseURL(srv.URL),
		norman.WithAPIKey("nk-test-not-alice"),
	)
	client := retryable.NewClient(mgr)
	client.Logger = nil

	// norman.CheckRetry stops at once: no retry can fix a rejected key.
	_, err := client.Post(srv.URL+"/authenticate/accounts/get", "application/json", []byte("{}"))
	fmt.Println("key rejected:", errors.Is(err, norman.ErrUnauthorized))
	fmt.Println("logins:", srv.Logins())
	// Output:
	// key rejected: true
	// logins: 1
}
