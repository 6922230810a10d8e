package deviceapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
)

// authRequest serves POST /api/devices/v1/authentication/auth_requests.
//
// The body's exact bytes must be signed by the key it carries
// (X-MEN-Signature). A device's key is bound: by the fingerprint its
// manifest names, or, for a trust-on-first-use manifest, by the first key
// the store recorded for the device. An accepted device gets 200 and a
// token (Content-Type application/jwt, the raw token as body). Any other
// device gets 401, as Mender's deviceauth answers devices it has not
// accepted:
//
//   - a device the live commit does not accept is recorded as pending, at
//     most UnknownRate per source address (429 beyond) and while the store
//     has room for pending records (503 when full); its key is the first
//     one recorded for it;
//   - a key other than the one bound to the device (or recorded for a
//     pending device) changes nothing: it is recorded as a conflict, which
//     the management API lists with both fingerprints.
//
// So an unauthenticated caller cannot change what the store holds about a
// device, and what it can make the store hold is bounded.
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
	id := identity.ID()
	ctx := c.Request().Context()
	snap := a.opts.Live()
	if snap == nil {
		// Before the first commit is served nobody can be judged: not
		// pending (which would mislabel accepted devices), just later.
		return notReady()
	}
	now := a.opts.Now()
	// A client certificate decides alone (cert.go); without one, the
	// Device manifests do.
	manifest, cert, err := a.admitCert(c.Request(), snap, identity, fp, now)
	if err != nil {
		return a.refuseCert(c, snap, id, err, now)
	}
	if manifest == nil {
		manifest = a.adm.get(snap).admit(identity.Strings, identity.Typed, fp)
	}
	rec := store.Device{ID: id, Identity: identity.Canonical(), KeyFingerprint: fp, Status: store.DeviceAccepted, LastSeen: now}
	var created bool
	switch {
	case manifest == nil:
		if !a.unknown.allow(a.opts.Clients.Key(c.Request()), now) {
			return tooMany(c, "too many auth requests of devices that are not accepted from this address", a.opts.UnknownRate)
		}
		rec.Status = store.DevicePending
		created, err = a.opts.Store.SeeDevice(ctx, rec)
	case cert != "": // the key the certificate holds
		created, err = a.opts.Store.SeeDevice(ctx, rec)
	case manifest.Spec.PublicKeySHA256 == "": // trustOnFirstUse
		created, err = a.opts.Store.BindDevice(ctx, rec)
		if err == nil && created {
			a.log.Info("device key bound on first use", "device_id", id, "device", manifest.Name, "key", fp)
		}
	default: // the key Git names
		created, err = a.opts.Store.SeeDevice(ctx, rec)
	}
	switch {
	case errors.Is(err, store.ErrKeyConflict):
		if a.clashLog.due(now, fullLogEvery) {
			a.log.Warn("auth request with a key other than the device's (more are listed by the management API, not logged, for a minute)",
				"device_id", id, "key", fp)
		}
		return unauthorized(c, "another key is bound to this device; if the device has a new key, commit its publicKeySHA256 (gitfleet devices conflicts lists it)")
	case errors.Is(err, store.ErrFull):
		if a.fullLog.due(now, fullLogEvery) {
			a.log.Warn("pending devices are at their limit: auth requests of new devices are refused until pending records expire or are accepted",
				"device_id", id)
		}
		c.Response().Header().Set("Retry-After", "3600")
		return echo.NewHTTPError(http.StatusServiceUnavailable, "the controller holds as many pending devices as it may; try again later")
	case errors.Is(err, store.ErrInvalid):
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	case err != nil:
		return a.httpError("record device", err, "device_id", id)
	}
	if manifest == nil {
		if created {
			a.log.Info("new pending device", "device_id", id, "key", fp)
			a.event(ctx, store.Event{Time: now, Commit: snap.Commit.SHA, Kind: schema.EventDevicePending, Subject: id,
				Message: fmt.Sprintf("device %s is pending (key %s); accept it with a Device manifest: gitfleet devices accept %s", id, fp, id)})
		}
		return unauthorized(c, "the device is pending: accept it with a Device manifest (gitfleet devices accept "+id+")")
	}
	key, err := a.tokenKey(ctx)
	if err != nil {
		return a.httpError("token key", err)
	}
	tok, err := signToken(key, Claims{
		Subject: id, ID: randomID(), IssuedAt: now.Unix(), Expires: now.Add(a.opts.TokenTTL).Unix(),
		Issuer: tokenIssuer, Device: true, Identity: identity.Strings, Typed: identity.Typed, Key: fp, Cert: cert,
	})
	if err != nil {
		return a.httpError("sign token", err)
	}
	a.log.Debug("device authenticated", "device_id", id, "device", manifest.Name)
	return c.Blob(http.StatusOK, "application/jwt", []byte(tok))
}
