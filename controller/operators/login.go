package operators

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceconnect"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
	"golang.org/x/crypto/ssh"
)

// Routes of the operator API (none of them takes the management token).
const (
	// LoginPath is mender-cli's login: HTTP Basic with the operator's
	// name and personal access token; the answer is the session token, as
	// text (as Mender's useradm answers).
	LoginPath = "/api/management/v1/useradm/auth/login"
	// ChallengePath hands out a challenge for an SSH login:
	// {"operator": NAME} → {"challenge": C, "expires": T}.
	ChallengePath = "/api/management/v1/operators/login/challenge"
	// SSHLoginPath takes the signed challenge:
	// {"operator", "challenge", "signature": base64 of the SSH wire
	// signature} → {"operator", "token", "expires"}.
	SSHLoginPath = "/api/management/v1/operators/login/ssh"
	// DevicesPath and ArtifactsPath are mender-cli's listings.
	DevicesPath   = "/api/management/v2/devauth/devices"
	ArtifactsPath = "/api/management/v1/deployments/artifacts"
)

// ChallengeTTL is how long an SSH login challenge may be answered.
const ChallengeTTL = 2 * time.Minute

// challengePrefix starts a challenge: "gfc1.<payload>.<mac>".
const challengePrefix = "gfc1."

// SignedData is what an SSH login signs: a fixed context and the
// challenge, so that the signature is good for nothing else.
func SignedData(challenge string) []byte {
	return []byte("gitfleet operator login\x00" + challenge)
}

// maxLoginBody bounds a login request's body.
const maxLoginBody = 16 << 10

// Register mounts the operator routes on e.
func (a *Access) Register(e *echo.Echo) {
	e.POST(LoginPath, a.login)
	e.POST(ChallengePath, a.challenge)
	e.POST(SSHLoginPath, a.sshLogin)
	e.GET(DevicesPath, a.listDevices)
	e.GET(ArtifactsPath, a.listArtifacts)
}

// refuse answers a failed login: it spends one of the source's failed
// logins and answers 401 with msg.
func (a *Access) refuse(ctx *echo.Context, msg string) error {
	a.failed(ctx.Request())
	ctx.Response().Header().Set("WWW-Authenticate", `Basic realm="gitfleet"`)
	return echo.NewHTTPError(http.StatusUnauthorized, msg)
}

func (a *Access) tooMany(ctx *echo.Context) error {
	ctx.Response().Header().Set("Retry-After", strconv.Itoa(int(loginEvery/time.Second)))
	return echo.NewHTTPError(http.StatusTooManyRequests, "too many failed logins from your address; wait a minute and try again")
}

// liveOperator returns the live commit's operator called name, or a
// message saying why there is none usable.
func (a *Access) liveOperator(name string) (*schema.Operator, string) {
	snap := a.opts.Live()
	if snap == nil || snap.Fleet == nil {
		return nil, "the controller serves no commit yet: operators are declared in Git"
	}
	o := snap.Fleet.Operator(name)
	if o == nil {
		return nil, fmt.Sprintf("unknown operator or wrong credential (operators are Operator manifests of the live commit %s)", short(snap.Commit.SHA))
	}
	if o.Expired(a.opts.Now()) {
		return nil, fmt.Sprintf("operator %s expired on %s: a commit must extend spec.expires in %s", o.Name, o.ExpiresAt().UTC().Format(time.RFC3339), o.Source.File)
	}
	return o, ""
}

// login answers mender-cli login: HTTP Basic, the operator's name and
// personal access token.
func (a *Access) login(ctx *echo.Context) error {
	r := ctx.Request()
	ctx.Response().Header().Set("Cache-Control", "no-store")
	if a.blocked(r) {
		return a.tooMany(ctx)
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" || pass == "" {
		return a.refuse(ctx, "log in with HTTP Basic: your operator name and personal access token (mender-cli login --username NAME --password TOKEN)")
	}
	if _, err := readBody(ctx); err != nil { // a 2FA code, which Gitfleet has no use for
		return err
	}
	o, why := a.liveOperator(user)
	if o == nil {
		return a.refuse(ctx, why)
	}
	if !o.TokenMatches(pass) {
		if o.Spec.TokenSHA256 == "" {
			return a.refuse(ctx, "operator "+o.Name+" has no personal access token in Git (spec.tokenSHA256): log in with gitfleet login --ssh-key")
		}
		return a.refuse(ctx, "unknown operator or wrong credential")
	}
	tok, exp, err := a.IssueToken(r.Context(), o, viaToken)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "cannot issue a session token: "+err.Error())
	}
	a.log.Info("operator logged in", "operator", o.Name, "via", viaToken, "expires", exp)
	ctx.Response().Header().Set("Content-Type", "application/jwt")
	return ctx.String(http.StatusOK, tok)
}

func readBody(ctx *echo.Context) ([]byte, error) {
	r := ctx.Request()
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(ctx.Response(), r.Body, maxLoginBody))
	if err != nil {
		return nil, echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", maxLoginBody))
	}
	return b, nil
}

// Challenge is what ChallengePath answers.
type Challenge struct {
	Challenge string    `json:"challenge"`
	Expires   time.Time `json:"expires"`
}

// SSHLogin is what SSHLoginPath takes.
type SSHLogin struct {
	Operator  string `json:"operator"`
	Challenge string `json:"challenge"`
	Signature string `json:"signature"` // base64 of ssh.Marshal(*ssh.Signature)
}

// Session is what SSHLoginPath answers.
type Session struct {
	Operator string    `json:"operator"`
	Token    string    `json:"token"`
	Expires  time.Time `json:"expires"`
}

type challengeClaims struct {
	Operator string `json:"op"`
	Nonce    string `json:"n"`
	Expires  int64  `json:"exp"`
}

func decodeJSON(ctx *echo.Context, v any) error {
	b, err := readBody(ctx)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "the body must be a JSON object: "+err.Error())
	}
	return nil
}

// challenge hands out a fresh challenge for an SSH login. It does not say
// whether the operator exists: the login does.
func (a *Access) challenge(ctx *echo.Context) error {
	ctx.Response().Header().Set("Cache-Control", "no-store")
	if a.blocked(ctx.Request()) {
		return a.tooMany(ctx)
	}
	var req struct {
		Operator string `json:"operator"`
	}
	if err := decodeJSON(ctx, &req); err != nil {
		return err
	}
	if req.Operator == "" || len(req.Operator) > 128 {
		return echo.NewHTTPError(http.StatusBadRequest, `give {"operator": NAME}`)
	}
	key, err := a.secret(ctx.Request().Context())
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, err.Error())
	}
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	exp := a.opts.Now().Add(ChallengeTTL)
	js, _ := json.Marshal(challengeClaims{Operator: req.Operator, Nonce: base64.RawURLEncoding.EncodeToString(nonce), Expires: exp.Unix()})
	body := challengePrefix + base64.RawURLEncoding.EncodeToString(js)
	c := body + "." + base64.RawURLEncoding.EncodeToString(mac(key, "challenge", body))
	return ctx.JSON(http.StatusOK, Challenge{Challenge: c, Expires: time.Unix(exp.Unix(), 0).UTC()})
}

// sshLogin checks a challenge signed with the operator's SSH key and
// issues a session token. A challenge is good once, on any replica, and
// for ChallengeTTL.
func (a *Access) sshLogin(ctx *echo.Context) error {
	r := ctx.Request()
	ctx.Response().Header().Set("Cache-Control", "no-store")
	if a.blocked(r) {
		return a.tooMany(ctx)
	}
	var req SSHLogin
	if err := decodeJSON(ctx, &req); err != nil {
		return err
	}
	cl, err := a.checkChallenge(r.Context(), req.Challenge)
	if err != nil {
		return a.refuse(ctx, err.Error())
	}
	if cl.Operator != req.Operator {
		return a.refuse(ctx, "this challenge was issued for another operator")
	}
	o, why := a.liveOperator(req.Operator)
	if o == nil {
		return a.refuse(ctx, why)
	}
	if o.SSHKey() == nil {
		return a.refuse(ctx, "operator "+o.Name+" has no SSH key in Git (spec.sshPublicKey)")
	}
	raw, err := base64.StdEncoding.DecodeString(req.Signature)
	var sig ssh.Signature
	if err != nil || ssh.Unmarshal(raw, &sig) != nil {
		return a.refuse(ctx, "signature: want base64 of an SSH signature")
	}
	if err := o.SSHKey().Verify(SignedData(req.Challenge), &sig); err != nil {
		return a.refuse(ctx, "the signature is not by the SSH key operator "+o.Name+" has in Git ("+ssh.FingerprintSHA256(o.SSHKey())+")")
	}
	// Single use, across replicas: the store remembers it past its expiry.
	first, err := a.opts.Store.FirstDelivery(r.Context(), "operator-login:"+tokenHash(req.Challenge), ChallengeTTL+time.Minute)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	if !first {
		return a.refuse(ctx, "this challenge was used already (a replay): ask for a new one")
	}
	tok, exp, err := a.IssueToken(r.Context(), o, viaSSH)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "cannot issue a session token: "+err.Error())
	}
	a.log.Info("operator logged in", "operator", o.Name, "via", viaSSH, "key", ssh.FingerprintSHA256(o.SSHKey()), "expires", exp)
	return ctx.JSON(http.StatusOK, Session{Operator: o.Name, Token: tok, Expires: exp.UTC()})
}

// checkChallenge verifies a challenge's MAC and expiry.
func (a *Access) checkChallenge(ctx context.Context, c string) (challengeClaims, error) {
	var cl challengeClaims
	i := strings.LastIndexByte(c, '.')
	if !strings.HasPrefix(c, challengePrefix) || i <= len(challengePrefix) {
		return cl, errors.New("malformed challenge: ask for a new one")
	}
	body, sig := c[:i], c[i+1:]
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return cl, errors.New("malformed challenge: ask for a new one")
	}
	key, err := a.secret(ctx)
	if err != nil {
		return cl, err
	}
	if !hmac.Equal(got, mac(key, "challenge", body)) {
		return cl, errors.New("challenge not issued by this controller")
	}
	js, err := base64.RawURLEncoding.DecodeString(body[len(challengePrefix):])
	if err != nil || json.Unmarshal(js, &cl) != nil {
		return cl, errors.New("malformed challenge: ask for a new one")
	}
	if a.opts.Now().Unix() >= cl.Expires {
		return cl, fmt.Errorf("the challenge expired (challenges last %s): ask for a new one", ChallengeTTL)
	}
	return cl, nil
}

// requireOperator authenticates a listing request; on failure it answers
// 401 (or 429 while the source's failed logins are spent).
func (a *Access) requireOperator(ctx *echo.Context) (string, error) {
	name, err := a.Operator(ctx.Request())
	if err == nil {
		return name, nil
	}
	if errors.Is(err, errTooMany) {
		return "", a.tooMany(ctx)
	}
	if errors.Is(err, deviceconnect.ErrUnauthenticated) {
		ctx.Response().Header().Set("WWW-Authenticate", `Bearer realm="gitfleet"`)
		return "", echo.NewHTTPError(http.StatusUnauthorized, err.Error())
	}
	return "", echo.NewHTTPError(http.StatusServiceUnavailable, err.Error())
}
