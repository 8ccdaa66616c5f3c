package normantest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// maxBodyBytes is the largest request body that the server reads.
const maxBodyBytes = 1 << 20

// normanError is the error object of the Norman API.
type normanError struct {
	Timestamp   string   `json:"timestamp"` // formatted by formatTimestamp
	StatusCode  int      `json:"status_code"`
	ErrorType   string   `json:"error_type"` // reason phrase of StatusCode, such as "Unauthorized"
	Message     string   `json:"message"`
	Cause       string   `json:"cause"`
	Suggestions []string `json:"suggestions"`
}

// validationError is the body of a FastAPI response to a request that cannot
// be decoded.
type validationError struct {
	Detail string `json:"detail"`
}

type loginRequest struct {
	APIKey string `json:"api_key"`
}

type loginResponse struct {
	Account     *account `json:"account"`
	AccessToken string   `json:"access_token"`
	IDToken     string   `json:"id_token"`
}

type signupRequest struct {
	Name     *string `json:"name"`
	DeviceID *string `json:"device_id"` // accepted and ignored
}

type signupResponse struct {
	Account *account `json:"account"`
	APIKey  string   `json:"api_key"`
}

// serveHTTP routes a request through s.mux. A request that matches no
// pattern gets the FastAPI response for status 404 or 405 as JSON, in place
// of the plain-text response of http.ServeMux.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	handler, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}

	recorder := &statusRecorder{header: make(http.Header), status: http.StatusOK}
	handler.ServeHTTP(recorder, r)
	for _, name := range []string{"Allow", "Location"} {
		if value := recorder.header.Get(name); value != "" {
			w.Header().Set(name, value)
		}
	}
	s.writeDetail(w, recorder.status, http.StatusText(recorder.status))
}

// handleLogin serves POST /v0/authenticate/login/key.
func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	s.logins.Add(1)

	// The body is read before the delay: net/http notices a client that
	// goes away, and cancels the request context, only once the handler
	// has read the body to its end.
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	if !s.waitLoginDelay(r.Context()) {
		if s.ctx.Err() != nil {
			s.writeError(w, http.StatusServiceUnavailable, "Service unavailable",
				"The server is shutting down.", "Retry the login against a running server.")
		}
		// Otherwise the client has gone away, so no response is written.
		return
	}

	if status, fail := s.takeLoginFailure(); fail {
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "0")
		}
		s.writeError(w, status, "Login failed",
			fmt.Sprintf("normantest: FailLogins made this login fail with status %d.", status),
			"Retry the login.")
		return
	}

	var request loginRequest
	if detail := decodeJSON(body, &request); detail != "" {
		s.writeDetail(w, http.StatusUnprocessableEntity, detail)
		return
	}
	if request.APIKey == "" {
		s.writeError(w, http.StatusUnauthorized, "Authentication failed",
			"The request has no API key.", `Send the API key in the field "api_key".`)
		return
	}

	s.mu.Lock()
	key := s.keys[request.APIKey]
	revoked := key != nil && key.revoked
	s.mu.Unlock()
	switch {
	case key == nil:
		s.writeError(w, http.StatusUnauthorized, "Authentication failed",
			"The API key is not valid.", "Check the API key, or sign up for a new one.")
		return
	case revoked:
		s.writeError(w, http.StatusUnauthorized, "Authentication failed",
			"The API key has been revoked.", "Sign up for a new API key.")
		return
	}

	access, id := s.issueTokens(key.account)
	s.writeJSON(w, http.StatusOK, loginResponse{Account: key.account, AccessToken: access, IDToken: id})
}

// handleSignup serves PUT /v0/authenticate/signup/key.
func (s *Server) handleSignup(w http.ResponseWriter, r *http.Request) {
	s.signups.Add(1)

	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	var request signupRequest
	if detail := decodeJSON(body, &request); detail != "" {
		s.writeDetail(w, http.StatusUnprocessableEntity, detail)
		return
	}
	if request.Name == nil || strings.TrimSpace(*request.Name) == "" {
		s.writeDetail(w, http.StatusUnprocessableEntity, `The field "name" must be a non-empty string.`)
		return
	}
	name := *request.Name

	key := "nk-test-" + randomHex(16)
	now := s.clock()
	s.mu.Lock()
	taken := s.names[name]
	var acct *account
	if !taken {
		acct = s.addAccountLocked(name, key, now)
	}
	s.mu.Unlock()
	if taken {
		s.writeError(w, http.StatusConflict, "Account name already taken",
			fmt.Sprintf("An account named %q already exists.", name), "Sign up with another name.")
		return
	}

	s.writeJSON(w, http.StatusOK, signupResponse{Account: acct, APIKey: key})
}

// handleAccountsGet serves POST /v0/authenticate/accounts/get behind
// requireToken. It returns the caller's account, keyed by its ID, and
// ignores the request body.
func (s *Server) handleAccountsGet(w http.ResponseWriter, r *http.Request) {
	id := AccountID(r)
	s.mu.Lock()
	acct := s.accounts[id]
	s.mu.Unlock()
	s.writeJSON(w, http.StatusOK, map[string]*account{id: acct})
}

// handleJWKS serves GET /v0/.well-known/jwks.json.
func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	s.jwksGets.Add(1)
	s.writeJSON(w, http.StatusOK, s.jwks())
}

// requireToken returns a handler that counts the request in s.requests,
// rejects it with status 401 unless it carries a valid access token, and
// otherwise passes it to next with the caller's account ID in its context.
func (s *Server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)

		accountID, reason := s.authenticate(r)
		if accountID == "" {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			s.writeError(w, http.StatusUnauthorized, "Invalid access token", reason,
				"Log in again to get a new access token.")
			return
		}

		s.setHeaders(w.Header())
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), accountIDKey{}, accountID)))
	})
}

// waitLoginDelay waits for the login delay and reports whether it passed
// before ctx ended.
func (s *Server) waitLoginDelay(ctx context.Context) bool {
	s.mu.Lock()
	delay := s.loginDelay
	hook := s.loginWaitHook
	s.mu.Unlock()
	if delay == 0 {
		return true
	}

	if hook != nil {
		hook(true)
		defer hook(false)
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// takeLoginFailure uses up one of the failures set by FailLogins and returns
// its status, or reports false if none is left.
func (s *Server) takeLoginFailure() (status int, fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failLogins == 0 {
		return 0, false
	}
	s.failLogins--
	return s.failStatus, true
}

// readBody reads the request body. If that fails, it writes an error
// response and reports false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err == nil {
		return body, true
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		s.writeDetail(w, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("The request body is larger than %d bytes.", maxBodyBytes))
	} else {
		s.writeDetail(w, http.StatusBadRequest, "The request body could not be read.")
	}
	return nil, false
}

// decodeJSON decodes body into v and returns "" on success, or otherwise a
// detail message for a status 422 response. The message never quotes the
// body, which may contain a secret.
func decodeJSON(body []byte, v any) string {
	err := json.Unmarshal(body, v)
	if err == nil {
		return ""
	}
	var syntaxError *json.SyntaxError
	var typeError *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntaxError):
		return fmt.Sprintf("The request body is not valid JSON: syntax error at byte offset %d.", syntaxError.Offset)
	case errors.As(err, &typeError) && typeError.Field != "":
		return fmt.Sprintf("The field %q must be a string, but the request body has a JSON %s there.", typeError.Field, typeError.Value)
	case errors.As(err, &typeError):
		return fmt.Sprintf("The request body must be a JSON object, not a JSON %s.", typeError.Value)
	default:
		return "The request body is not valid JSON."
	}
}

// writeError writes a Norman error object with the given status.
func (s *Server) writeError(w http.ResponseWriter, status int, message, cause string, suggestions ...string) {
	s.writeJSON(w, status, normanError{
		Timestamp:   formatTimestamp(s.clock()),
		StatusCode:  status,
		ErrorType:   http.StatusText(status),
		Message:     message,
		Cause:       cause,
		Suggestions: suggestions,
	})
}

// writeDetail writes a FastAPI-style error response with the given status.
func (s *Server) writeDetail(w http.ResponseWriter, status int, detail string) {
	s.writeJSON(w, status, validationError{Detail: detail})
}

// writeJSON writes v as the JSON body of a response with the given status.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	s.setHeaders(w.Header())
	w.WriteHeader(status)
	// The response types always encode, so an error here means that the
	// client has gone away.
	_ = json.NewEncoder(w).Encode(v)
}

// setHeaders sets the Content-Type header and a Date header from the server
// clock. net/http adds its own Date header only when none is set.
func (s *Server) setHeaders(h http.Header) {
	h.Set("Content-Type", "application/json")
	h.Set("Date", s.clock().UTC().Format(http.TimeFormat))
}

// statusRecorder is an http.ResponseWriter that keeps the status and the
// headers of a response and discards its body.
type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(status int)      { r.status = status }
