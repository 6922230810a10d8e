package deviceapi

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/schema"
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
// of its public key). A device admitted by a client certificate also
// carries "gf.crt", which names that certificate for the revocation check.
//
// Verifying a token the cache does not hold (hotpath.go) costs one
// HMAC-SHA256 and a parse of the payload without encoding/json: the
// payload was written by signToken (encoding/json's fixed field order,
// sorted identity keys), so parseClaims reads exactly that layout and
// leaves anything else (an escaped string, say) to encoding/json.

// ErrToken is returned (wrapped) for every token that does not verify:
// malformed, signed with another key or algorithm, or expired.
var ErrToken = errors.New("deviceapi: invalid token")

// MaxTokenBytes bounds an Authorization header's token.
const MaxTokenBytes = 16 << 10

// tokenSecretName is the store.SharedSecret holding the HMAC key.
const tokenSecretName = "deviceapi.jwt.hs256"

// Claims are what a device token says. Keep the field order: parseClaims
// reads the payload in exactly this order.
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
	// Cert names the client certificate that admitted the device
	// (DeviceCA admission; empty otherwise). Its format is the DeviceCA
	// code's; the revocation hook (tokenCache.setRevoked) is given it on
	// every call.
	Cert string `json:"gf.crt,omitempty"`

	// admitted is the Device manifest that admitted the token's device
	// in the admission index admittedBy (not part of the token: set by
	// compactClaims on the token cache's copy), so that a poll with a
	// token seen before skips the admission lookup while that index
	// serves (admitToken).
	admitted   *schema.Device
	admittedBy *admission
}

const tokenIssuer = "gitfleet"

// jwtHeader is the only header this package issues or accepts.
var jwtHeader = b64(mustJSON(map[string]string{"alg": "HS256", "typ": "JWT"}))

// sigChars is the length of an HMAC-SHA256 signature in base64url.
const sigChars = 43

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

// splitToken returns the signed part (header.payload) of tok, its payload
// and its signature decoded, or a reason it is not one of ours.
func splitToken(tok string) (signed, payload string, sig [sha256.Size]byte, err error) {
	if len(tok) > MaxTokenBytes {
		return "", "", sig, fmt.Errorf("%w: longer than %d bytes", ErrToken, MaxTokenBytes)
	}
	h, rest, ok1 := strings.Cut(tok, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s, ".") {
		return "", "", sig, fmt.Errorf("%w: not three dot-separated parts", ErrToken)
	}
	// The header must be exactly ours: no "none", no other algorithm.
	// (It is public: no constant-time comparison needed.)
	if h != jwtHeader {
		return "", "", sig, fmt.Errorf("%w: unexpected header", ErrToken)
	}
	if len(s) != sigChars || decodeB64(sig[:], s) != sha256.Size {
		return "", "", sig, fmt.Errorf("%w: signature is not 32 bytes of base64url", ErrToken)
	}
	return tok[:len(h)+1+len(p)], p, sig, nil
}

// verifyToken checks tok's signature under key and its times against now,
// and returns its claims.
func verifyToken(key []byte, tok string, now time.Time) (Claims, error) {
	signed, p, sig, err := splitToken(tok)
	if err != nil {
		return Claims{}, err
	}
	return verifySplit(key, signed, p, &sig, now)
}

// verifySplit is verifyToken after splitToken.
func verifySplit(key []byte, signed, p string, sig *[sha256.Size]byte, now time.Time) (Claims, error) {
	sc := getScratch(key)
	defer scratchPool.Put(sc)
	sc.buf = append(sc.buf[:0], signed...)
	sc.mac.Reset()
	sc.mac.Write(sc.buf)
	if !hmac.Equal(sig[:], sc.mac.Sum(sc.sum[:0])) {
		return Claims{}, fmt.Errorf("%w: bad signature", ErrToken)
	}
	n := decodeB64(sc.buf[:cap(sc.buf)], p)
	if n < 0 {
		return Claims{}, fmt.Errorf("%w: payload is not base64url", ErrToken)
	}
	c, ok := parseClaims(sc.buf[:n])
	if !ok {
		// Not the layout signToken writes (an escaped character, a
		// token of an older version): encoding/json decides.
		c = Claims{}
		if err := json.Unmarshal(sc.buf[:n], &c); err != nil {
			return Claims{}, fmt.Errorf("%w: payload: %v", ErrToken, err)
		}
	}
	if err := checkClaims(&c, now); err != nil {
		return Claims{}, err
	}
	return c, nil
}

// checkClaims checks what verifyToken checks beyond the signature; the
// cache repeats the expiry check on every use.
func checkClaims(c *Claims, now time.Time) error {
	switch unix := now.Unix(); {
	case c.Subject == "" || c.Issuer != tokenIssuer || !c.Device:
		return fmt.Errorf("%w: not a gitfleet device token", ErrToken)
	case c.Expires <= unix:
		return fmt.Errorf("%w: expired at %s", ErrToken, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	case c.IssuedAt > unix+int64(maxClockSkew/time.Second):
		return fmt.Errorf("%w: issued in the future", ErrToken)
	}
	return nil
}

// maxClockSkew tolerates replicas whose clocks disagree a little.
const maxClockSkew = 5 * time.Minute

// scratch is what one verification needs and can reuse: an HMAC keyed
// with key, and a buffer for the signed part and then the payload.
type scratch struct {
	key []byte
	mac hash.Hash
	sum [sha256.Size]byte
	buf []byte
}

var scratchPool = sync.Pool{New: func() any { return &scratch{buf: make([]byte, 0, 1024)} }}

func getScratch(key []byte) *scratch {
	sc := scratchPool.Get().(*scratch)
	if sc.mac == nil || !bytes.Equal(sc.key, key) {
		sc.key = bytes.Clone(key)
		sc.mac = hmac.New(sha256.New, sc.key)
	}
	if cap(sc.buf) > 4<<10 { // do not keep the big buffer a long token grew
		sc.buf = make([]byte, 0, 1024)
	}
	return sc
}

// b64val maps a base64url character to its value, 0xff for any other byte.
var b64val = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = byte(i)
	}
	return t
}()

// decodeB64 decodes unpadded base64url src into dst (which must hold
// len(src)*3/4 bytes) and returns the decoded length, or -1 when src is
// not base64url or dst is too short. It accepts what
// base64.RawURLEncoding.DecodeString accepts but line breaks (which that
// skips), without allocating.
func decodeB64(dst []byte, src string) int {
	if len(src)%4 == 1 || len(dst) < len(src)*3/4 {
		return -1
	}
	n := 0
	for len(src) >= 4 {
		a, b, c, d := b64val[src[0]], b64val[src[1]], b64val[src[2]], b64val[src[3]]
		if (a|b|c|d)&0xc0 != 0 { // 0xff, not base64url, has these bits
			return -1
		}
		v := uint32(a)<<18 | uint32(b)<<12 | uint32(c)<<6 | uint32(d)
		dst[n], dst[n+1], dst[n+2] = byte(v>>16), byte(v>>8), byte(v)
		n += 3
		src = src[4:]
	}
	switch len(src) {
	case 2:
		a, b := b64val[src[0]], b64val[src[1]]
		if (a|b)&0xc0 != 0 {
			return -1
		}
		dst[n] = a<<2 | b>>4
		n++
	case 3:
		a, b, c := b64val[src[0]], b64val[src[1]], b64val[src[2]]
		if (a|b|c)&0xc0 != 0 {
			return -1
		}
		v := uint32(a)<<18 | uint32(b)<<12 | uint32(c)<<6
		dst[n], dst[n+1] = byte(v>>16), byte(v>>8)
		n += 2
	}
	return n
}

// parseClaims reads a payload in the layout signToken writes:
//
//	{"sub":"…","jti":"…","iat":N,"exp":N,"iss":"…","mender.device":B,
//	 "gf.id":null|{"k":"v",…}[,"gf.idt":true],"gf.key":"…"[,"gf.crt":"…"]}
//
// with no whitespace and no escaped string. It reports false for anything
// else, which encoding/json then decides. Its strings share one copy of
// the payload.
func parseClaims(b []byte) (Claims, bool) {
	r, ok := parseRawClaims(string(b))
	if !ok {
		return Claims{}, false
	}
	if r.identity != "" {
		p := claimParser{s: r.identity}
		if !p.attrs(&r.c.Identity) || p.i != len(r.identity) {
			return Claims{}, false
		}
	}
	return r.c, true
}

// rawClaims are claims as parseRawClaims reads them: the identity as
// written.
type rawClaims struct {
	c        Claims // Identity nil
	identity string // the "gf.id" object ({"k":"v",…}), "" for null
}

// parseRawClaims is parseClaims without building the identity map: its
// strings, the identity's included, are parts of s.
func parseRawClaims(s string) (rawClaims, bool) {
	p := claimParser{s: s}
	var r rawClaims
	c := &r.c
	ok := p.lit(`{"sub":`) && p.str(&c.Subject) &&
		p.lit(`,"jti":`) && p.str(&c.ID) &&
		p.lit(`,"iat":`) && p.int(&c.IssuedAt) &&
		p.lit(`,"exp":`) && p.int(&c.Expires) &&
		p.lit(`,"iss":`) && p.str(&c.Issuer) &&
		p.lit(`,"mender.device":`) && p.bool(&c.Device) &&
		p.lit(`,"gf.id":`) && p.rawAttrs(&r.identity)
	if !ok {
		return rawClaims{}, false
	}
	if p.lit(`,"gf.idt":true`) {
		c.Typed = true
	}
	if !p.lit(`,"gf.key":`) || !p.str(&c.Key) {
		return rawClaims{}, false
	}
	if p.lit(`,"gf.crt":`) && !p.str(&c.Cert) {
		return rawClaims{}, false
	}
	if !p.lit(`}`) || p.i != len(p.s) {
		return rawClaims{}, false
	}
	return r, true
}

type claimParser struct {
	s string
	i int
}

func (p *claimParser) lit(l string) bool {
	if strings.HasPrefix(p.s[p.i:], l) {
		p.i += len(l)
		return true
	}
	return false
}

func (p *claimParser) str(dst *string) bool {
	if p.i >= len(p.s) || p.s[p.i] != '"' {
		return false
	}
	for j := p.i + 1; j < len(p.s); j++ {
		switch c := p.s[j]; {
		case c == '"':
			*dst = p.s[p.i+1 : j]
			p.i = j + 1
			return true
		case c == '\\' || c < 0x20:
			return false
		}
	}
	return false
}

func (p *claimParser) int(dst *int64) bool {
	j, neg := p.i, false
	if j < len(p.s) && p.s[j] == '-' {
		neg = true
		j++
	}
	start := j
	var v int64
	for ; j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9'; j++ {
		v = v*10 + int64(p.s[j]-'0')
	}
	// encoding/json writes no leading zero, and 18 digits cannot overflow.
	if n := j - start; n == 0 || n > 18 || n > 1 && p.s[start] == '0' {
		return false
	}
	if neg {
		v = -v
	}
	*dst, p.i = v, j
	return true
}

func (p *claimParser) bool(dst *bool) bool {
	switch {
	case p.lit("true"):
		*dst = true
	case p.lit("false"):
		*dst = false
	default:
		return false
	}
	return true
}

// rawAttrs reads null or an object of string values, and sets dst to the
// object as written ("" for null).
func (p *claimParser) rawAttrs(dst *string) bool {
	if p.lit("null") {
		return true
	}
	start := p.i
	if !p.lit("{") {
		return false
	}
	if !p.lit("}") {
		for {
			var k, v string
			if !p.str(&k) || !p.lit(":") || !p.str(&v) {
				return false
			}
			if p.lit("}") {
				break
			}
			if !p.lit(",") {
				return false
			}
		}
	}
	*dst = p.s[start:p.i]
	return true
}

func (p *claimParser) attrs(dst *Attributes) bool {
	if p.lit("null") {
		return true
	}
	if !p.lit("{") {
		return false
	}
	m := Attributes{}
	if p.lit("}") {
		*dst = m
		return true
	}
	for {
		var k, v string
		if !p.str(&k) || !p.lit(":") || !p.str(&v) {
			return false
		}
		if _, dup := m[k]; dup {
			return false // encoding/json keeps the last; let it
		}
		m[k] = v
		if p.lit("}") {
			*dst = m
			return true
		}
		if !p.lit(",") {
			return false
		}
	}
}

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
