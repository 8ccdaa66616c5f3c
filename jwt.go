package norman

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// maxNumericDate is 9999-12-31T23:59:59Z in Unix seconds. Larger values, and
// their negatives, are treated as unreadable rather than overflowing time.Time.
const maxNumericDate = 253402300799

// unverifiedParser decodes JWT segments without checking signatures. It
// accepts padded base64url segments, which some issuers emit.
var unverifiedParser = jwt.NewParser(jwt.WithPaddingAllowed())

// tokenTimes is the expiry data read from a JWT payload. A zero field means
// the claim is absent or unreadable.
type tokenTimes struct {
	expiresAt time.Time // exp
	issuedAt  time.Time // iat
}

// readTokenTimes reads the exp and iat claims of token without verifying its
// signature. The token's alg plays no part, so tokens signed with algorithms
// that golang-jwt cannot verify (ES256K, none, unknown names) are read too.
// It returns an error only when the payload cannot be decoded at all. A
// payload without a usable exp gives a zero expiresAt and no error.
func readTokenTimes(token string) (tokenTimes, error) {
	var claims timeClaims
	_, _, err := unverifiedParser.ParseUnverified(token, &claims)
	if !claims.decoded {
		if err == nil {
			err = errors.New("no claims")
		}
		return tokenTimes{}, fmt.Errorf("unreadable JWT payload: %w", err)
	}

	// ParseUnverified also reports errors found after the payload was decoded,
	// such as an unknown alg or a malformed signature segment. Neither matters
	// for reading the expiry.
	return tokenTimes{
		expiresAt: parseNumericDate(claims.Exp),
		issuedAt:  parseNumericDate(claims.Iat),
	}, nil
}

// parseNumericDate reads an RFC 7519 NumericDate written as a JSON integer,
// float or numeric string. It returns the zero time for null, missing or
// out-of-range values.
func parseNumericDate(raw json.RawMessage) time.Time {
	if len(raw) == 0 {
		return time.Time{}
	}
	var number json.Number
	if err := json.Unmarshal(raw, &number); err != nil || number == "" {
		return time.Time{}
	}
	seconds, err := number.Float64()
	if err != nil || math.IsNaN(seconds) || math.Abs(seconds) > maxNumericDate {
		return time.Time{}
	}
	whole, fraction := math.Modf(seconds)
	return time.Unix(int64(whole), int64(fraction*1e9)).UTC()
}

// timeClaims decodes only the claims that expiry depends on. It implements
// [jwt.Claims] so that [jwt.Parser.ParseUnverified] can fill it.
type timeClaims struct {
	Exp json.RawMessage
	Iat json.RawMessage

	decoded bool // the payload was a JSON object
}

// UnmarshalJSON matches claim names exactly, as RFC 7519 requires, where
// decoding into struct fields would also accept "EXP" or "Exp".
func (c *timeClaims) UnmarshalJSON(data []byte) error {
	var claims map[string]json.RawMessage
	if err := json.Unmarshal(data, &claims); err != nil {
		return err
	}
	*c = timeClaims{Exp: claims["exp"], Iat: claims["iat"], decoded: claims != nil}
	return nil
}

func (c *timeClaims) GetExpirationTime() (*jwt.NumericDate, error) {
	return numericDate(parseNumericDate(c.Exp)), nil
}

func (c *timeClaims) GetIssuedAt() (*jwt.NumericDate, error) {
	return numericDate(parseNumericDate(c.Iat)), nil
}

func (c *timeClaims) GetNotBefore() (*jwt.NumericDate, error) { return nil, nil }
func (c *timeClaims) GetIssuer() (string, error)              { return "", nil }
func (c *timeClaims) GetSubject() (string, error)             { return "", nil }
func (c *timeClaims) GetAudience() (jwt.ClaimStrings, error)  { return nil, nil }

func numericDate(t time.Time) *jwt.NumericDate {
	if t.IsZero() {
		return nil
	}
	return &jwt.NumericDate{Time: t}
}
