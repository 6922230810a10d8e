package deviceapi

import (
	"errors"
	"net/http"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/labstack/echo/v5"
)

// authRequest serves POST /api/devices/v1/authentication/auth_requests.
//
// The body's exact bytes must be signed by the key it carries
// (X-MEN-Signature). An accepted device gets 200 and a token
// (Content-Type application/jwt, the raw token as body); any other device
// is recorded as pending and gets 401, as Mender's deviceauth answers
// devices it has not accepted. Accepted or not, the store remembers what
// the device said (identity, key fingerprint, when) for the operator.
func (a *API) authRequest(c *echo.Context) error {
	body, err := readBody(c, MaxAuthBody)
	if err != nil {
		return err
	}
	req, identity, err := DecodeAuthRequest(body)
	if err != nil {
		return a.httpError("auth request", err)
	}
	pub, fp, err := parseDeviceKey(req.PubKey)
	if err != nil {
		return a.httpError("auth request", err)
	}
	if err := verifySignature(pub, body, c.Request().Header.Get("X-MEN-Signature")); err != nil {
		// Nothing is recorded: an unsigned request proves nothing, and
		// must not be able to fill the pending list or move a record.
		a.log.Info("auth request with a bad signature", "key", fp[:16], "err", err)
		return unauthorized(c, "the request signature does not verify with the given key")
	}
	id := DeviceID(identity)
	ctx := c.Request().Context()
	snap := a.opts.Live()
	if snap == nil {
		// Before the first commit is served nobody can be judged: not
		// pending (which would mislabel accepted devices), just later.
		return notReady()
	}
	manifest := a.adm.get(snap).admit(identity, fp)
	rec := store.Device{ID: id, Identity: identity.Canonical(), KeyFingerprint: fp, Status: store.DevicePending, LastSeen: a.opts.Now()}
	if manifest != nil {
		rec.Status = store.DeviceAccepted
	}
	created, err := a.opts.Store.SeeDevice(ctx, rec)
	if err != nil {
		if errors.Is(err, store.ErrInvalid) {
			return echo.NewHTTPError(http.StatusBadRequest, err.Error())
		}
		return a.httpError("record device", err, "device_id", id)
	}
	if manifest == nil {
		if created {
			a.log.Info("new pending device", "device_id", id, "key", fp)
		}
		return unauthorized(c, "the device is pending: accept it with a Device manifest (gitfleet devices accept "+id+")")
	}
	key, err := a.tokenKey(ctx)
	if err != nil {
		return a.httpError("token key", err)
	}
	now := a.opts.Now()
	tok, err := signToken(key, Claims{
		Subject: id, ID: randomID(), IssuedAt: now.Unix(), Expires: now.Add(a.opts.TokenTTL).Unix(),
		Issuer: tokenIssuer, Device: true, Identity: identity, Key: fp,
	})
	if err != nil {
		return a.httpError("sign token", err)
	}
	a.log.Debug("device authenticated", "device_id", id, "device", manifest.Name)
	return c.Blob(http.StatusOK, "application/jwt", []byte(tok))
}
