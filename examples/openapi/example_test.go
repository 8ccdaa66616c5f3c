package openapi_test

import (
	"context"
	"fmt"
	"log"
	"net/http"

	norman "github.com/norman-ml/norman-go"
	"github.com/norman-ml/norman-go/examples/openapi"
	"github.com/norman-ml/norman-go/normantest"
)

func Example() {
	srv := normantest.NewServer()
	defer srv.Close()
	srv.AddAccount("alice", "nk-test-alice")

	mgr := norman.NewManager(
		norman.WithBaseURL(srv.URL),
		norman.WithAPIKey("nk-test-alice"),
	)
	// The generated client gets the same base URL as the manager, and an
	// http.Client whose norman.Transport adds the access token.
	client, err := openapi.NewClientWithResponses(srv.URL,
		openapi.WithHTTPClient(&http.Client{Transport: norman.NewTransport(mgr, nil)}))
	if err != nil {
		log.Fatal(err)
	}

	resp, err := client.GetAccountsWithResponse(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	if resp.JSON200 == nil {
		log.Fatalf("GetAccounts: %s", resp.Status())
	}
	accounts := *resp.JSON200
	fmt.Println(resp.Status(), accounts[mgr.AccountID()].Name)
	// Output:
	// 200 OK alice
}
