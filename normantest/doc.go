// Package normantest provides a local Norman authentication server for
// tests and examples.
//
// A [Server] is a real HTTP server on a loopback address, started the way
// [net/http/httptest.NewServer] starts one. It implements the API key login
// and signup endpoints, the account lookup endpoint and the JSON Web Key Set
// of the Norman API under the base URL in [Server.URL], which ends in "/v0".
// Access and ID tokens are RS256 JSON Web Tokens that a client can verify
// with the public key published at [Server.JWKSURL].
//
// Methods on Server script the behavior a client has to cope with: a fake
// clock ([Server.SetClock]), short token lifetimes, failing or slow logins,
// revoked tokens and API keys. For clients that verify tokens,
// [Server.RotateKey] switches to a new signing key, and
// [Server.SignWithUnpublishedKey] issues tokens that no published key
// verifies. Counters report how many requests of each kind arrived,
// including requests for the JWKS, and [Server.Handle] adds endpoints
// behind the same bearer token check.
//
// Responses follow the Norman API. A successful response carries the JSON
// object of the endpoint. A rejected login or token gets a Norman error
// object with the fields timestamp, status_code, error_type, message, cause
// and suggestions. A request body that cannot be decoded gets a status 422
// response with a FastAPI-style "detail" string. The responses of the
// endpoints above never contain an API key or a token that the client sent.
package normantest
