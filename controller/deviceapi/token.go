package deviceapi

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Tokens are JWTs (RFC 7519) signed with HMAC-SHA256 under a key every
// replica reads from the store (store.Coordination.SharedSecret), so a
// token one replica issued is good on all of them.
//
// Claims: sub is the device ID, jti a random ID, iat and exp the issue and
// expiry times (unix seconds), iss "gitfleet", and "mender.device": true as
// Mender's own device tokens carry. Two private claims let every call
// re-check admission against the live Snapshot without a store read:
// "gf.id" (the device's identity attributes) and "gf.key" (the hex SHA-256
// of its public key).

// ErrToken is returned (wrapped) for every token that does not verify:
// malformed, signed with another key or algorithm, or expired.
var ErrToken = errors.New("deviceapi: invalid token")

// MaxTokenBytes bounds an Authorization header's token.
const MaxTokenBytes = 16 << 10

// tokenSecretName is the store.SharedSecret holding the HMAC key.
const tokenSecretName = "deviceapi.jwt.hs256"

// Claims are what a device token says.
type Claims struct {
	Subject  string     `json:"sub"`
	ID       string     `json:"jti"`
	IssuedAt int64      `json:"iat"`
	Expires  int64      `json:"exp"`
	Issuer   string     `json:"iss"`
	Device   bool       `json:"mender.device"`
	Identity Attributes `json:"gf.id"`            // the string-valued attributes of id_data
	Typed    bool       `json:"gf.idt,omitempty"` // id_data has a value that is not a string
	Key      string     `json:"gf.key"`
}

const tokenIssuer = "gitfleet"

// jwtHeader is the only header this package issues or accepts.
var jwtHeader = b64(mustJSON(map[string]string{"alg": "HS256", "typ": "JWT"}))

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// signToken issues a token for c under key.
func signToken(key []byte, c Claims) (string, error) {
	if len(key) < 32 {
		return "", errors.New("deviceapi: token key shorter than 32 bytes")
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("deviceapi: encode claims: %w", err)
	}
	signed := jwtHeader + "." + b64(payload)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signed))
	return signed + "." + b64(mac.Sum(nil)), nil
}

// verifyToken checks tok's signature under key and its times against now,
// and returns its claims.
func verifyToken(key []byte, tok string, now time.Time) (Claims, error) {
	if len(tok) > MaxTokenBytes {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrToken, MaxTokenBytes)
	}
	h, rest, ok1 := strings.Cut(tok, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s, ".") {
		return Claims{}, fmt.Errorf("%w: not three dot-separated parts", ErrToken)
	}
	// The header must be exactly ours: no "none", no other algorithm.
	if !hmac.Equal([]byte(h), []byte(jwtHeader)) {
		return Claims{}, fmt.Errorf("%w: unexpected header", ErrToken)
	}
	sig, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: signature is not base64url", ErrToken)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(tok[:len(h)+1+len(p)]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return Claims{}, fmt.Errorf("%w: bad signature", ErrToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(p)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload is not base64url", ErrToken)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Claims{}, fmt.Errorf("%w: payload: %v", ErrToken, err)
	}
	switch unix := now.Unix(); {
	case c.Subject == "" || c.Issuer != tokenIssuer || !c.Device:
		return Claims{}, fmt.Errorf("%w: not a gitfleet device token", ErrToken)
	case c.Expires <= unix:
		return Claims{}, fmt.Errorf("%w: expired at %s", ErrToken, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	case c.IssuedAt > unix+int64(maxClockSkew/time.Second):
		return Claims{}, fmt.Errorf("%w: issued in the future", ErrToken)
	}
	return c, nil
}

// maxClockSkew tolerates replicas whose clocks disagree a little.
const maxClockSkew = 5 * time.Minute

// newTokenKey generates a fresh HMAC key for SharedSecret.
func newTokenKey() ([]byte, error) {
	k := make([]byte, 32)
	_, err := rand.Read(k)
	return k, err
}

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
