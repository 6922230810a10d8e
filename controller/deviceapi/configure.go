package deviceapi

// Configuration for stock Mender clients.
//
// Mender configures a device with a deployment like any other: a
// generated artifact of type "mender-configure" whose payload meta-data
// is the configuration, installed by the Mender Configure update module,
// which writes /var/lib/mender-configure/device-config.json and runs the
// apply-device-config.d scripts with it. The module's inventory script
// then reports the file, as it is, to PUT deviceconfig/configuration
// (config.go records it). Gitfleet serves both halves, so a stock client
// with the module is configured from Git like a device running
// gitfleet-agent (which fetches GET deviceconfig/gitfleet instead).
//
// Who gets a configuration deployment. A device polling
// deployments/next gets one when all of these hold:
//
//   - the controller serves configuration deployments (Options.Configure)
//     and, when it signs them, a SigningKey in the live commit declares
//     its key (else none is offered: see Configure);
//   - the device is a stock client: its inventory has no
//     gitfleet_agent_version;
//   - it can install one: its inventory's update_modules lists
//     mender-configure (Mender's mender-inventory-update-modules script),
//     or its provides show a configuration artifact it installed, or it
//     has reported a configuration;
//   - the live commit gives it a non-empty configuration (DeviceConfig):
//     a device no DeviceConfig targets any more keeps what it has;
//   - its provides do not show that configuration installed
//     (data-partition.mender-configure.version, or the artifact name, is
//     configartifact.Name of its digest), and its last configuration
//     status does not name that digest. A failed configuration is not
//     offered again until Git changes it (as a Mender deployment without
//     retries). A file changed by hand on the device, once its report
//     comes in, shows as drifted (stockDrift) and is not overwritten
//     until Git changes the configuration, as with gitfleet-agent.
//
// Precedence with rollouts: a device in the middle of a rollout
// deployment (admitted, not finished) gets that first; otherwise its
// configuration comes before a new rollout admission, so a device is
// configured before it takes a phase's place.
//
// The deployment's ID is "config-" and the digest's 64 hex digits, so
// every replica reads the digest back from a status report. Its
// artifact is generated on download from a URL presigned for the device
// (GET v1/deployments/download/configuration/ID/DEVICE_TYPE/DEVICE_ID,
// Mender's path, with expire, device and sig parameters: an HMAC of
// them all under a secret the replicas share through the store), kept in
// a cache by (digest, device type); on a miss the configuration is
// computed again from the live commit and must still have that digest.
//
// Status reports of a configuration deployment go to the device's
// configuration status, never to a rollout: success (and
// already-installed) records "applied" with the digest, failure
// "failed"; the deployment log the client uploads after a failure fills
// in the failing apply script, its exit code (from the module's
// `Script "…" returned exit code N.` line) and the log's tail.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/configartifact"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/devconfig"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/labstack/echo/v5"
)

// ConfigDownloadPath is the path prefix of configuration artifact
// downloads (Mender's); ID/DEVICE_TYPE/DEVICE_ID follow it.
const ConfigDownloadPath = "/api/devices/v1/deployments/download/configuration/"

// configIDPrefix starts the deployment ID of a configuration deployment.
const configIDPrefix = "config-"

// Via value of the configuration statuses a stock client's deployments
// and reports record.
const viaMender = "mender"

// configDownloadSecret names the HMAC key of configuration download URLs
// in the store (Store.SharedSecret).
const configDownloadSecret = "deviceapi.configure.download.hmac"

// ConfigureOptions configure NewConfigure.
type ConfigureOptions struct {
	// Artifacts generates and caches the configuration artifacts, signed
	// with the controller's configuration signing key or unsigned.
	// Required.
	Artifacts *configartifact.Cache
	// KeyName, when set, is the SigningKey in Git that must declare the
	// signing key; when empty, any SigningKey with the key's fingerprint
	// does. Ignored for unsigned artifacts.
	KeyName string
	// KindTTL is how long what a device's inventory says (gitfleet-agent,
	// or a stock client with or without the mender-configure module) is
	// remembered before it is read again. Default 5 minutes.
	KindTTL time.Duration
	// MaxDevices bounds the devices remembered. Default 100,000.
	MaxDevices int
}

// Configure serves stock Mender clients their configuration as
// mender-configure deployments (Options.Configure). Create it with
// NewConfigure; one Configure serves one API.
type Configure struct {
	opts  ConfigureOptions
	kinds *expirable.LRU[string, deviceKind]
	keyOK atomic.Pointer[keyCheck]

	keyMu sync.Mutex
	key   []byte
}

// NewConfigure checks opts and returns a Configure.
func NewConfigure(opts ConfigureOptions) (*Configure, error) {
	if opts.Artifacts == nil {
		return nil, errors.New("deviceapi: ConfigureOptions.Artifacts is required")
	}
	if opts.KindTTL <= 0 {
		opts.KindTTL = 5 * time.Minute
	}
	if opts.MaxDevices <= 0 {
		opts.MaxDevices = 100_000
	}
	return &Configure{opts: opts, kinds: expirable.NewLRU[string, deviceKind](opts.MaxDevices, nil, opts.KindTTL)}, nil
}

// deviceKind is what a device's inventory says about how it is configured.
type deviceKind uint8

const (
	kindAgent        deviceKind = iota + 1 // gitfleet-agent: GET deviceconfig/gitfleet
	kindStock                              // a stock client without mender-configure, as far as it tells
	kindConfigurable                       // a stock client with mender-configure
)

// keyCheck is the verdict on the signing key for one Snapshot.
type keyCheck struct {
	snap *reconcile.Snapshot
	err  error // nil: the key is declared (or artifacts are unsigned)
}

// ConfigDeploymentID names the configuration deployment of digest
// ("sha256:HEX"): "config-HEX".
func ConfigDeploymentID(digest string) string {
	return configIDPrefix + strings.TrimPrefix(digest, "sha256:")
}

// parseConfigDeploymentID returns the digest a configuration deployment
// ID names; ok is false for any other ID (a rollout's "NAME-gN" never has
// this form: 64 hex digits hold no "g").
func parseConfigDeploymentID(id string) (digest string, ok bool) {
	hex, found := strings.CutPrefix(id, configIDPrefix)
	if !found || len(hex) != 64 {
		return "", false
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", false
		}
	}
	return "sha256:" + hex, true
}

// registerConfigure adds the configuration artifact download to g (rooted
// at /api/devices; no device token: the URL is presigned).
func (a *API) registerConfigure(g *echo.Group) {
	p := strings.TrimPrefix(ConfigDownloadPath, "/api/devices") + ":id/:type/:device"
	g.GET(p, a.configDownload)
	g.HEAD(p, a.configDownload)
}

// configOffer is a configuration deployment due to a device.
type configOffer struct {
	values map[string]string
	digest string
}

// offerConfigure answers the poll with the device's configuration
// deployment when one is due (see the top of this file); served reports
// whether it did. dev carries what next knows of the device (its
// inventory when the rollout plan needed it, else nil).
func (a *API) offerConfigure(c *echo.Context, s *session, req NextRequest, dev *rollout.Device) (served bool, err error) {
	o, err := a.configureDue(c.Request().Context(), s, req, dev)
	if err != nil || o == nil {
		return false, err
	}
	name := s.manifest.Name
	id := ConfigDeploymentID(o.digest)
	artName, _ := configartifact.Name(o.digest)
	uri, exp, err := a.configURL(c.Request().Context(), id, req.DeviceType, s.claims.Subject, name)
	if err != nil {
		return false, a.httpError("presign configuration download", err)
	}
	a.log.Info("configuration deployment offered", "device_id", s.claims.Subject, "device", name,
		"deployment", id[:len(configIDPrefix)+12], "artifact_name", artName)
	return true, c.JSON(http.StatusOK, NextResponse{
		ID: id,
		Artifact: NextArtifact{
			ArtifactName:          artName,
			Source:                NextSource{URI: uri, Expire: exp.UTC().Format(time.RFC3339)},
			DeviceTypesCompatible: []string{req.DeviceType},
		},
	})
}

// nextOrConfigure ends a poll that has no rollout deployment: the
// device's configuration deployment when one is due, else 204.
func (a *API) nextOrConfigure(c *echo.Context, s *session, req NextRequest, dev *rollout.Device) error {
	if served, err := a.offerConfigure(c, s, req, dev); served || err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// configureDue returns the configuration deployment due to the device, or
// nil. Devices that cannot take one cost no store round trip most of the
// time: what their inventory says is remembered for KindTTL (from the
// first look, not renewed by later polls, so a change is seen).
func (a *API) configureDue(ctx context.Context, s *session, req NextRequest, dev *rollout.Device) (*configOffer, error) {
	cf := a.opts.Configure
	if cf == nil || a.opts.Config == nil || s.snap == nil || req.DeviceType == "" {
		return nil, nil
	}
	if !a.configKeyDeclared(s.snap) {
		return nil, nil
	}
	src := a.opts.Config(s.snap)
	if src == nil {
		return nil, nil
	}
	name := s.manifest.Name
	kind, known := cf.kinds.Get(name)
	if known && kind != kindConfigurable {
		return nil, nil
	}
	var inv Attributes
	if dev != nil {
		inv = dev.Inventory
	}
	if !known || inv == nil && src.NeedsInventory() {
		rec, err := a.opts.Store.Device(ctx, s.claims.Subject)
		switch {
		case errors.Is(err, store.ErrNotFound):
			inv = Attributes{}
		case err != nil:
			return nil, fmt.Errorf("read device %s: %w", s.claims.Subject, err)
		default:
			inv = InventoryAttributes(rec.Inventory)
		}
	}
	if !known {
		kind = configKindOf(inv, req.Provides)
		if kind == kindAgent {
			cf.kinds.Add(name, kind)
			return nil, nil
		}
	}
	if inv == nil {
		inv = Attributes{}
	}
	values, digest := src.For(name, s.claims.Identity, inv)
	if len(values) == 0 || digest == "" || configartifact.Installed(req.Provides, digest) {
		if !known {
			cf.kinds.Add(name, kind)
		}
		return nil, nil
	}
	st, err := a.opts.Store.ConfigStatusOf(ctx, []string{name})
	if err != nil {
		return nil, fmt.Errorf("read configuration status of %s: %w", name, err)
	}
	cur, reported := st[name]
	if !known {
		if kind == kindStock && reported && cur.Via == viaMender {
			kind = kindConfigurable // its mender-configure reported a configuration
		}
		cf.kinds.Add(name, kind)
	}
	if kind != kindConfigurable {
		return nil, nil
	}
	if reported && cur.Digest == digest && cur.State != "" {
		// Applied; failed (not again until Git changes it); or drifted
		// (changed on the device: shown, not overwritten).
		return nil, nil
	}
	return &configOffer{values: values, digest: digest}, nil
}

// configKindOf tells from a device's inventory and provides how it is
// configured.
func configKindOf(inv Attributes, provides Attributes) deviceKind {
	if _, ok := inv["gitfleet_agent_version"]; ok {
		return kindAgent
	}
	if _, ok := provides[configartifact.ProvidesKey]; ok {
		return kindConfigurable
	}
	if slices.Contains(strings.Split(inv["update_modules"], ","), configartifact.Type) {
		return kindConfigurable
	}
	return kindStock
}

// configKeyDeclared reports whether configuration artifacts may be
// offered under snap: always when they are unsigned; when signed, only
// while a SigningKey of snap declares the key (named KeyName, when set).
// A key Git no longer declares is revoked: nothing signed with it is
// offered, and the reason is logged once per commit.
func (a *API) configKeyDeclared(snap *reconcile.Snapshot) bool {
	cf := a.opts.Configure
	if kc := cf.keyOK.Load(); kc != nil && kc.snap == snap {
		return kc.err == nil
	}
	kc := &keyCheck{snap: snap, err: checkConfigKey(snap, cf.opts.Artifacts.Verifier(), cf.opts.KeyName)}
	if prev := cf.keyOK.Swap(kc); kc.err != nil && (prev == nil || prev.snap != snap) {
		a.log.Error("configuration deployments are not offered to stock Mender clients", "commit", snap.Commit.SHA, "err", kc.err)
	}
	return kc.err == nil
}

// checkConfigKey returns nil when v is nil (unsigned) or a SigningKey of
// snap declares v's key (and is called name, when name is set).
func checkConfigKey(snap *reconcile.Snapshot, v *artifact.Verifier, name string) error {
	if v == nil {
		return nil
	}
	fp := v.Fingerprint()
	var keys []schema.SigningKey
	if snap != nil && snap.Fleet != nil {
		keys = snap.Fleet.Keys
	}
	for _, k := range keys {
		if name != "" && k.Name != name {
			continue
		}
		kv, err := artifact.LoadVerifier([]byte(k.Spec.PublicKey))
		if err != nil {
			continue
		}
		if kv.Fingerprint() == fp {
			return nil
		}
		if name != "" {
			return fmt.Errorf("SigningKey %q declares key %.16s…, not the configuration signing key %.16s… (--config-signing-key): commit the key's public half (gitfleet keys public) in that SigningKey, or name the right one with --config-signing-key-name", name, kv.Fingerprint(), fp)
		}
	}
	if name != "" {
		return fmt.Errorf("no SigningKey %q in the fleet repository: commit one with the public half of --config-signing-key (gitfleet keys public), so devices that verify signatures accept configuration artifacts", name)
	}
	return fmt.Errorf("no SigningKey in the fleet repository declares the configuration signing key %.16s… (--config-signing-key): commit one with its public half (gitfleet keys public)", fp)
}

// downloadKey returns the HMAC key of configuration download URLs, read
// (or created) in the store the first time.
func (cf *Configure) downloadKey(ctx context.Context, st Store) ([]byte, error) {
	cf.keyMu.Lock()
	defer cf.keyMu.Unlock()
	if cf.key != nil {
		return cf.key, nil
	}
	k, err := st.SharedSecret(ctx, configDownloadSecret, newTokenKey)
	if err != nil {
		return nil, fmt.Errorf("read configuration download key: %w", err)
	}
	if len(k) < 32 {
		return nil, fmt.Errorf("configuration download key %q in the store is %d bytes (want ≥ 32)", configDownloadSecret, len(k))
	}
	cf.key = k
	return k, nil
}

// configMAC is HMAC-SHA256 of the download URL's parts, each
// length-prefixed so no two tuples share an encoding.
func configMAC(key []byte, parts ...string) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write([]byte(strconv.Itoa(len(p)) + ":" + p + "|"))
	}
	return m.Sum(nil)
}

// configURL presigns the download of deployment id's artifact for a
// device of deviceType (its store ID deviceID, manifest name).
func (a *API) configURL(ctx context.Context, id, deviceType, deviceID, name string) (string, time.Time, error) {
	key, err := a.opts.Configure.downloadKey(ctx, a.opts.Store)
	if err != nil {
		return "", time.Time{}, err
	}
	exp := a.opts.Now().Add(a.opts.DownloadTTL + time.Second - 1).Truncate(time.Second)
	expStr := strconv.FormatInt(exp.Unix(), 10)
	q := url.Values{
		"device": {name},
		"expire": {expStr},
		"sig":    {hex.EncodeToString(configMAC(key, id, deviceType, deviceID, name, expStr))},
	}
	return strings.TrimRight(a.opts.PublicURL, "/") + ConfigDownloadPath +
		url.PathEscape(id) + "/" + url.PathEscape(deviceType) + "/" + url.PathEscape(deviceID) + "?" + q.Encode(), exp, nil
}

// configDownload serves a presigned configuration artifact download: 401
// without a signature, 403 for a signature that does not verify, an
// expired URL, or a device the live commit no longer declares, 404 when
// the device's configuration has changed since (it asks
// deployments/next again after the failure), else the artifact, with
// Range support.
func (a *API) configDownload(c *echo.Context) error {
	cf := a.opts.Configure
	if cf == nil {
		return echo.NewHTTPError(http.StatusNotFound, "configuration deployments are not served")
	}
	id, deviceType, deviceID := c.Param("id"), c.Param("type"), c.Param("device")
	for _, p := range []*string{&id, &deviceType, &deviceID} {
		v, err := url.PathUnescape(*p)
		if err != nil {
			return echo.NewHTTPError(http.StatusNotFound, "no such configuration artifact")
		}
		*p = v
	}
	digest, ok := parseConfigDeploymentID(id)
	if !ok || deviceType == "" || len(deviceType) > 256 || deviceID == "" || len(deviceID) > 256 {
		return echo.NewHTTPError(http.StatusNotFound, "no such configuration artifact")
	}
	q := c.Request().URL.Query()
	name, expStr, sigHex := q.Get("device"), q.Get("expire"), q.Get("sig")
	if sigHex == "" || expStr == "" || len(q["sig"]) != 1 || len(q["expire"]) != 1 || len(q["device"]) != 1 {
		return echo.NewHTTPError(http.StatusUnauthorized, "download URL is not signed")
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != sha256.Size || len(name) > 253 || len(expStr) > 20 {
		return echo.NewHTTPError(http.StatusForbidden, "download URL signature is malformed")
	}
	ctx := c.Request().Context()
	key, err := cf.downloadKey(ctx, a.opts.Store)
	if err != nil {
		return a.httpError("configuration download key", err)
	}
	if !hmac.Equal(sig, configMAC(key, id, deviceType, deviceID, name, expStr)) {
		return echo.NewHTTPError(http.StatusForbidden, "download URL signature does not verify")
	}
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil || a.opts.Now().Unix() >= exp {
		return echo.NewHTTPError(http.StatusForbidden, "download URL expired")
	}
	snap := a.opts.Live()
	if snap == nil {
		return notReady()
	}
	if !declared(snap, name) || !a.configKeyDeclared(snap) {
		return echo.NewHTTPError(http.StatusForbidden, "the device this URL was issued to is no longer accepted, or configuration is no longer offered")
	}
	b, err := a.configArtifact(ctx, snap, digest, deviceType, deviceID, name)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Content-Type", "application/vnd.mender-artifact")
	h.Set("Content-Disposition", `attachment; filename="artifact.mender"`)
	h.Set("ETag", `"`+id+"-"+strconv.Itoa(len(b))+`"`)
	h.Set("Cache-Control", "private, no-store, no-transform")
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(c.Response(), c.Request(), "", time.Time{}, bytes.NewReader(b))
	return nil
}

// configArtifact returns the artifact of digest for deviceType: from the
// cache, or built from the device's configuration in snap, which must
// still have that digest.
func (a *API) configArtifact(ctx context.Context, snap *reconcile.Snapshot, digest, deviceType, deviceID, name string) ([]byte, error) {
	cache := a.opts.Configure.opts.Artifacts
	if b, ok := cache.Cached(digest, deviceType); ok {
		return b, nil
	}
	var src ConfigSource
	if a.opts.Config != nil {
		src = a.opts.Config(snap)
	}
	if src == nil {
		return nil, echo.NewHTTPError(http.StatusNotFound, "configuration is not served")
	}
	rec, err := a.opts.Store.Device(ctx, deviceID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, echo.NewHTTPError(http.StatusNotFound, "unknown device")
	}
	if err != nil {
		return nil, a.httpError("read device", err, "device_id", deviceID)
	}
	values, got := src.For(name, stringAttributes(rec.Identity), InventoryAttributes(rec.Inventory))
	if got != digest {
		return nil, echo.NewHTTPError(http.StatusNotFound, "the device's configuration has changed since this deployment was offered; it gets the new one at its next poll")
	}
	b, err := cache.Get(values, digest, deviceType)
	if err != nil {
		return nil, a.httpError("generate configuration artifact", err, "device", name)
	}
	return b, nil
}

// stringAttributes returns the string-valued attributes of a JSON object
// (a stored id_data), as authentication puts them in a token.
func stringAttributes(raw json.RawMessage) Attributes {
	var m map[string]any
	out := Attributes{}
	if json.Unmarshal(raw, &m) != nil {
		return out
	}
	for k, v := range m {
		if s, ok := v.(string); ok {
			out[k] = s
		}
	}
	return out
}

// declared reports whether snap has a Device manifest called name.
func declared(snap *reconcile.Snapshot, name string) bool {
	if snap == nil || snap.Fleet == nil {
		return false
	}
	for i := range snap.Fleet.Devices {
		if snap.Fleet.Devices[i].Name == name {
			return true
		}
	}
	return false
}

// configureStatus records a stock client's status report of a configuration
// deployment in its configuration status (never in a rollout): success
// and already-installed as applied, failure and noartifact as failed;
// the progress states change nothing. 204.
func (a *API) configureStatus(c *echo.Context, digest string) error {
	s := sessionOf(c)
	body, err := readBody(c, MaxStatusBody)
	if err != nil {
		return err
	}
	rep, err := DecodeStatus(body)
	if err != nil {
		return a.httpError("status report", err)
	}
	name := s.manifest.Name
	a.log.Debug("configuration deployment status", "device_id", s.claims.Subject, "device", name, "status", rep.Status, "substate", rep.SubState)
	st := store.ConfigStatus{Device: name, Digest: digest, Via: viaMender, Reported: a.opts.Now()}
	switch storeState(rep.Status) {
	case store.StateSuccess:
		st.State = devconfig.Applied
	case store.StateFailure:
		st.State = devconfig.Failed
	default:
		return c.NoContent(http.StatusNoContent)
	}
	changed, err := a.opts.Store.SetConfigStatus(c.Request().Context(), st)
	if errors.Is(err, store.ErrInvalid) {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	if err != nil {
		return a.httpError("record configuration status", err, "device", name)
	}
	if changed {
		a.log.Info("configuration deployment finished", "device_id", s.claims.Subject, "device", name,
			"digest", digest, "state", st.State, "status", rep.Status)
	}
	return c.NoContent(http.StatusNoContent)
}

// stockDrift turns a stock device's report (rec, applied with the
// reported file's digest) into a drift when the device had applied the
// configuration the live commit gives it (prev, recorded by the
// configuration deployment's success or an earlier report) and now
// reports another file: it was changed on the device. The drift keeps the
// applied digest, with the reported one as FileDigest, so the device
// shows as drifted rather than pending: nothing overwrites it until Git
// changes its configuration (a second deployment of the same artifact
// name would be "already-installed" to the client anyway).
func (a *API) stockDrift(ctx context.Context, s *session, prev, rec store.ConfigStatus) (store.ConfigStatus, error) {
	if prev.Via != viaMender || prev.Digest == rec.Digest || prev.State != devconfig.Applied && prev.State != devconfig.Drifted {
		return rec, nil
	}
	_, desired, ok, err := a.desiredConfig(ctx, s)
	if err != nil || !ok || prev.Digest != desired {
		return rec, err
	}
	rec.FileDigest, rec.Digest, rec.State = rec.Digest, prev.Digest, devconfig.Drifted
	return rec, nil
}

// moduleFailure matches the Mender Configure module's line for a failing
// apply script.
var moduleFailure = regexp.MustCompile(`Script "([^"]{1,255})" returned exit code ([0-9]{1,3})\.`)

// configureLog takes the deployment log a stock client uploads after a
// configuration deployment failed: the failing apply script, its exit
// code and the log's tail go into the device's configuration status
// when it records that failure. The lines go to the controller's log at
// debug only (a configuration may be secret, and so may what an apply
// script prints). 204.
func (a *API) configureLog(c *echo.Context, digest string) error {
	s := sessionOf(c)
	body, err := readBody(c, a.opts.MaxLogBody)
	if err != nil {
		return err
	}
	msgs, err := DecodeLog(body)
	if err != nil {
		return a.httpError("deployment log", err)
	}
	name := s.manifest.Name
	now := a.opts.Now()
	ctx := c.Request().Context()
	if !a.logs.allow(s.claims.Subject, now) {
		if a.dropLog.due(now, fullLogEvery) {
			a.log.Warn("deployment log dropped: too many uploads from this device (more are dropped silently for a minute)", "device", name, "lines", len(msgs))
		}
		return c.NoContent(http.StatusNoContent)
	}
	// An apply script may print what it was given: the device's secrets
	// never reach the store, the log or the API.
	scrub, err := a.secretScrubber(ctx, s)
	if err != nil {
		return a.httpError("read device", err, "device_id", s.claims.Subject)
	}
	for i := range msgs {
		msgs[i].Message = scrub.Replace(msgs[i].Message)
	}
	a.log.Info("configuration deployment log received", "device_id", s.claims.Subject, "device", name, "lines", len(msgs))
	for i, m := range msgs {
		if i == a.opts.MaxLogLines {
			break
		}
		a.log.Debug("device log", "device", name, "device_time", truncate(m.Timestamp, 64), "device_level", truncate(m.Level, 16), "message", truncate(m.Message, 1024))
	}
	cur, err := a.opts.Store.ConfigStatusOf(ctx, []string{name})
	if err != nil {
		return a.httpError("read configuration status", err, "device", name)
	}
	st, ok := cur[name]
	if !ok || st.Digest != digest || st.State != devconfig.Failed || st.Via != viaMender {
		return c.NoContent(http.StatusNoContent) // not a failure we recorded
	}
	st.Script, st.ExitCode, st.Output = failureOf(msgs)
	st.Reported = now
	if _, err := a.opts.Store.SetConfigStatus(ctx, st); err != nil {
		return a.httpError("record configuration status", err, "device", name)
	}
	return c.NoContent(http.StatusNoContent)
}

// secretScrubber returns a Replacer of every secret value of the
// device's configuration by "<secret>" (as scrubSecrets does, for many
// strings).
func (a *API) secretScrubber(ctx context.Context, s *session) (*strings.Replacer, error) {
	values, _, ok, err := a.desiredConfig(ctx, s)
	if err != nil || !ok {
		return strings.NewReplacer(), err
	}
	src := a.opts.Config(s.snap)
	var pairs []string
	for k, v := range values {
		if v != "" && src.Secret(k) {
			pairs = append(pairs, v, "<secret>")
		}
	}
	return strings.NewReplacer(pairs...), nil
}

// failureOf finds the failing apply script and its exit code in a
// deployment log (the first failure other than 20, "reboot", which the
// module does not count as one), and returns the log's tail: its
// messages, one per line, at most devconfig.MaxOutput bytes.
func failureOf(msgs []LogMessage) (script string, code int, tail string) {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(m.Message)
		b.WriteByte('\n')
		for _, f := range moduleFailure.FindAllStringSubmatch(m.Message, -1) {
			n, _ := strconv.Atoi(f[2])
			if script == "" && n != 20 {
				script, code = f[1], n
			}
		}
	}
	tail = b.String()
	if len(tail) > devconfig.MaxOutput {
		tail = tail[len(tail)-devconfig.MaxOutput:]
		// Start at a whole line (and a whole UTF-8 character).
		if i := strings.IndexByte(tail, '\n'); i >= 0 && i < len(tail)-1 {
			tail = tail[i+1:]
		}
	}
	return script, code, strings.TrimRight(tail, "\n")
}
