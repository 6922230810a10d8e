package operators

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceconnect"
	"github.com/gitfleet/gitfleet/schema"
	"golang.org/x/crypto/ssh"
)

// A session token is "gfo1.<payload>.<mac>": the payload is base64url
// JSON (tokenClaims), the MAC HMAC-SHA256 over "gfo1." and the payload
// with the store's shared secret. It names the operator and a digest of
// the credential it was issued for, so it stops working when that
// credential changes in Git.
const tokenPrefix = "gfo1."

// tokenClaims is the payload of a session token.
type tokenClaims struct {
	Operator string `json:"op"`
	Cred     string `json:"cred"` // credDigest of the credential logged in with
	Via      string `json:"via"`  // "token" or "ssh"
	Issued   int64  `json:"iat"`
	Expires  int64  `json:"exp"`
}

// Ways of logging in, as session tokens record them.
const (
	viaToken = "token"
	viaSSH   = "ssh"
)

func randomKey() ([]byte, error) {
	k := make([]byte, 32)
	_, err := rand.Read(k)
	return k, err
}

// credDigest identifies an operator's credential of one kind as Git
// declares it: the token's hash or the SSH key; "" when it has none.
func credDigest(o *schema.Operator, via string) string {
	var c string
	switch via {
	case viaToken:
		if o.Spec.TokenSHA256 == "" {
			return ""
		}
		c = "token:" + o.Spec.TokenSHA256
	case viaSSH:
		if o.SSHKey() == nil {
			return ""
		}
		c = "ssh:" + ssh.FingerprintSHA256(o.SSHKey())
	default:
		return ""
	}
	sum := sha256.Sum256([]byte(c))
	return hex.EncodeToString(sum[:16])
}

func mac(key []byte, domain, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(domain))
	h.Write([]byte{0})
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// IssueToken returns a session token for operator o, logged in via
// ("token" or "ssh"), and when it expires: SessionTTL from now, or the
// operator's expiry if sooner.
func (a *Access) IssueToken(ctx context.Context, o *schema.Operator, via string) (string, time.Time, error) {
	key, err := a.secret(ctx)
	if err != nil {
		return "", time.Time{}, err
	}
	now := a.opts.Now()
	exp := now.Add(a.opts.SessionTTL)
	if e := o.ExpiresAt(); !e.IsZero() && e.Before(exp) {
		exp = e
	}
	c := tokenClaims{Operator: o.Name, Cred: credDigest(o, via), Via: via, Issued: now.Unix(), Expires: exp.Unix()}
	js, err := json.Marshal(c)
	if err != nil {
		return "", time.Time{}, err
	}
	body := tokenPrefix + base64.RawURLEncoding.EncodeToString(js)
	return body + "." + base64.RawURLEncoding.EncodeToString(mac(key, "session", body)), time.Unix(c.Expires, 0), nil
}

// unauthenticated wraps deviceconnect.ErrUnauthenticated with a message.
func unauthenticated(format string, args ...any) error {
	return fmt.Errorf("%w: %s", deviceconnect.ErrUnauthenticated, fmt.Sprintf(format, args...))
}

// Operator authenticates r by its bearer token: a session token issued by
// a login, or a personal access token whose SHA-256 an Operator of the
// live commit declares. It returns the operator's name, or an error
// wrapping deviceconnect.ErrUnauthenticated that says what to do. Failed
// attempts count against the source's failed logins.
func (a *Access) Operator(r *http.Request) (string, error) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	tok = strings.TrimSpace(tok)
	if !ok || tok == "" {
		return "", unauthenticated("send Authorization: Bearer with a session token (mender-cli login --username NAME --password TOKEN, or gitfleet login --ssh-key) or a personal access token")
	}
	if a.blocked(r) {
		return "", errTooMany
	}
	name, err := a.authenticate(r.Context(), tok)
	if err != nil && errors.Is(err, deviceconnect.ErrUnauthenticated) {
		a.failed(r)
	}
	return name, err
}

// authenticate checks a bearer token against the live commit.
func (a *Access) authenticate(ctx context.Context, tok string) (string, error) {
	snap := a.opts.Live()
	if snap == nil || snap.Fleet == nil {
		return "", unauthenticated("the controller serves no commit yet: operators are declared in Git")
	}
	now := a.opts.Now()
	if !strings.HasPrefix(tok, tokenPrefix) {
		o := a.indexOf(snap).byToken[tokenHash(tok)]
		if o == nil {
			return "", unauthenticated("no Operator in the live commit %s has this personal access token (tokenSHA256 is printf %%s \"$TOKEN\" | sha256sum); log in again or ask for your Operator manifest to be merged", short(snap.Commit.SHA))
		}
		if o.Expired(now) {
			return "", unauthenticated("operator %s expired on %s (%s); a commit must extend spec.expires", o.Name, o.ExpiresAt().UTC().Format(time.RFC3339), o.Source)
		}
		return o.Name, nil
	}
	c, err := a.verifyToken(ctx, tok)
	if err != nil {
		return "", err
	}
	if now.Unix() >= c.Expires {
		return "", unauthenticated("session token of %s expired at %s: log in again", c.Operator, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	o := snap.Fleet.Operator(c.Operator)
	switch {
	case o == nil:
		return "", unauthenticated("operator %s is not declared in the live commit %s: their session tokens no longer work", c.Operator, short(snap.Commit.SHA))
	case o.Expired(now):
		return "", unauthenticated("operator %s expired on %s (%s)", o.Name, o.ExpiresAt().UTC().Format(time.RFC3339), o.Source)
	case credDigest(o, c.Via) == "" || !hmac.Equal([]byte(credDigest(o, c.Via)), []byte(c.Cred)):
		return "", unauthenticated("the %s operator %s logged in with changed in Git (%s) since this session token was issued: log in again", credName(c.Via), o.Name, o.Source)
	}
	return o.Name, nil
}

func credName(via string) string {
	if via == viaSSH {
		return "SSH key"
	}
	return "personal access token"
}

// verifyToken checks a session token's MAC and decodes it.
func (a *Access) verifyToken(ctx context.Context, tok string) (tokenClaims, error) {
	var c tokenClaims
	i := strings.LastIndexByte(tok, '.')
	if i <= len(tokenPrefix) {
		return c, unauthenticated("malformed session token: log in again")
	}
	body, sig := tok[:i], tok[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return c, unauthenticated("malformed session token: log in again")
	}
	key, err := a.secret(ctx)
	if err != nil {
		return c, err // not ErrUnauthenticated: the relay answers 401 without details and logs it
	}
	if !hmac.Equal(got, mac(key, "session", body)) {
		return c, unauthenticated("session token not issued by this controller (or its signature is wrong): log in again")
	}
	js, err := base64.RawURLEncoding.DecodeString(body[len(tokenPrefix):])
	if err != nil || json.Unmarshal(js, &c) != nil || c.Operator == "" {
		return c, unauthenticated("malformed session token: log in again")
	}
	return c, nil
}

// tokenHash is the SHA-256 of a personal access token, in lowercase hex.
func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
