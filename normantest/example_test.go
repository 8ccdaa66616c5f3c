package normantest_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"

	"github.com/norman-ml/norman-go/normantest"
)

func ExampleNewServer() {
	server := normantest.NewServer()
	defer server.Close()
	server.AddAccount("alice", "nk-test-alice")

	resp, err := http.Post(server.URL+"/authenticate/login/key", "application/json",
		strings.NewReader(`{"api_key": "nk-test-alice"}`))
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	var login struct {
		Account struct {
			Name string `json:"name"`
		} `json:"account"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&login); err != nil {
		log.Fatal(err)
	}

	fmt.Println(resp.Status)
	fmt.Println("account:", login.Account.Name)
	fmt.Println("access token received:", login.AccessToken != "")
	// Output:
	// 200 OK
	// account: alice
	// access token received: true
}

func ExampleServer_Handle() {
	server := normantest.NewServer()
	defer server.Close()
	accountID := server.AddAccount("alice", "nk-test-alice")
	server.Handle("GET whoami", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "{\"is_alice\": %t}\n", normantest.AccountID(r) == accountID)
	}))

	// A request without an access token never reaches the handler.
	resp, err := http.Get(server.URL + "/whoami")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println("without a token:", resp.Status)

	// Log in, then call the endpoint with the access token.
	resp, err = http.Post(server.URL+"/authenticate/login/key", "application/json",
		strings.NewReader(`{"api_key": "nk-test-alice"}`))
	if err != nil {
		log.Fatal(err)
	}
	var login struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&login)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, server.URL+"/whoami", nil)
	if err != nil {
		log.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+login.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print("with a token: ", resp.Status, " ", string(body))
	// Output:
	// without a token: 401 Unauthorized
	// with a token: 200 OK {"is_alice": true}
}
