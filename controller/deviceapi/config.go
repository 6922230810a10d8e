package deviceapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/devconfig"
	"github.com/labstack/echo/v5"
)

// Device configuration (DeviceConfig manifests, DESIGN.md §7). The merged
// configuration of a device is served by GET …/deviceconfig/gitfleet, with
// its digest as the ETag, so the agent's poll of an unchanged configuration
// is a 304; what the device applied (or failed to apply, or found drifted)
// comes back by PUT …/deviceconfig/gitfleet/status and is kept in the
// store for the management API. A stock Mender device reports the
// configuration it runs by PUT …/deviceconfig/configuration, as it does to
// Mender's server.

// ConfigSource is the merged configuration of the devices of one Snapshot
// (*deviceconfig.Set).
type ConfigSource interface {
	// For returns the configuration of the device with Device manifest
	// name, identity and inventory attributes, and its devconfig.Digest.
	For(name string, identity, inventory map[string]string) (values map[string]string, digest string)
	// NeedsInventory reports whether some target selects devices by
	// inventory attributes (For then needs them).
	NeedsInventory() bool
	// Secret reports whether key holds a secret (a DeviceConfig
	// `secrets` entry) in some configuration.
	Secret(key string) bool
}

// desiredConfig returns the configuration the live commit gives the
// session's device. ok is false when configuration is not served.
func (a *API) desiredConfig(ctx context.Context, s *session) (values map[string]string, digest string, ok bool, err error) {
	if a.opts.Config == nil || s.snap == nil {
		return nil, "", false, nil
	}
	src := a.opts.Config(s.snap)
	if src == nil {
		return nil, "", false, nil
	}
	var inventory map[string]string
	if src.NeedsInventory() {
		if inventory, err = a.inventoryOf(ctx, s.claims.Subject); err != nil {
			return nil, "", false, err
		}
	}
	values, digest = src.For(s.manifest.Name, s.claims.Identity, inventory)
	return values, digest, true, nil
}

// inventoryOf returns the stored inventory attributes of the device with
// ID id (none when it never sent any).
func (a *API) inventoryOf(ctx context.Context, id string) (map[string]string, error) {
	rec, err := a.opts.Store.Device(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return InventoryAttributes(rec.Inventory), nil
}

// configuration serves GET …/deviceconfig/gitfleet.
func (a *API) configuration(c *echo.Context) error {
	s := sessionOf(c)
	values, digest, ok, err := a.desiredConfig(c.Request().Context(), s)
	if err != nil {
		return a.httpError("read device", err, "device_id", s.claims.Subject)
	}
	if !ok {
		return echo.NewHTTPError(http.StatusNotFound, "this controller serves no device configuration")
	}
	etag := `"` + digest + `"`
	h := c.Response().Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "no-store") // values may be secrets
	if etagMatches(c.Request().Header.Get("If-None-Match"), etag) {
		return c.NoContent(http.StatusNotModified)
	}
	return c.JSON(http.StatusOK, devconfig.Configuration{Digest: digest, Values: values})
}

// configStatus serves PUT …/deviceconfig/gitfleet/status: what the agent
// applied, failed to apply or found drifted.
func (a *API) configStatus(c *echo.Context) error {
	s := sessionOf(c)
	body, err := readBody(c, devconfig.MaxBody)
	if err != nil {
		return err
	}
	var st devconfig.Status
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "configuration status: "+err.Error())
	}
	output := tailString(st.Output, devconfig.MaxOutput)
	if output != "" {
		// An apply script may print what it was given: the device's
		// secrets never reach the store, the log or the API.
		if output, err = a.scrubSecrets(c.Request().Context(), s, output); err != nil {
			return a.httpError("read device", err, "device_id", s.claims.Subject)
		}
	}
	rec := store.ConfigStatus{
		Device: s.manifest.Name, Digest: st.Digest, State: st.State, Script: st.Script, ExitCode: st.ExitCode,
		Output: output, FileDigest: st.FileDigest, Via: "agent", Reported: a.opts.Now(),
	}
	return a.recordConfig(c, rec)
}

// configReport serves PUT …/deviceconfig/configuration: the configuration
// a device runs, as a stock Mender device reports it (a JSON object of
// strings). It is recorded as applied with its digest.
func (a *API) configReport(c *echo.Context) error {
	s := sessionOf(c)
	body, err := readBody(c, devconfig.MaxBody)
	if err != nil {
		return err
	}
	var values map[string]string
	if err := json.Unmarshal(body, &values); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "configuration: want a JSON object of string values: "+err.Error())
	}
	if len(values) > devconfig.MaxKeys {
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("configuration of %d keys; at most %d", len(values), devconfig.MaxKeys))
	}
	via := "mender"
	prev, err := a.opts.Store.ConfigStatusOf(c.Request().Context(), []string{s.manifest.Name})
	if err == nil && prev[s.manifest.Name].Via == "agent" {
		via = "agent" // the Gitfleet agent reports it too, after its status
	}
	rec := store.ConfigStatus{Device: s.manifest.Name, Digest: devconfig.Digest(values), State: devconfig.Applied,
		Via: via, Reported: a.opts.Now()}
	if p := prev[s.manifest.Name]; err == nil && via == "agent" && p.Digest == rec.Digest && p.State == devconfig.Applied {
		// The agent's status said so already: nothing to write.
		return c.NoContent(http.StatusNoContent)
	}
	if via == "mender" && err == nil {
		if rec, err = a.stockDrift(c.Request().Context(), s, prev[s.manifest.Name], rec); err != nil {
			return a.httpError("read device", err, "device_id", s.claims.Subject)
		}
	}
	return a.recordConfig(c, rec)
}

func (a *API) recordConfig(c *echo.Context, rec store.ConfigStatus) error {
	if err := store.ValidateConfigStatus(rec); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, strings.TrimPrefix(err.Error(), store.ErrInvalid.Error()+": "))
	}
	changed, err := a.opts.Store.SetConfigStatus(c.Request().Context(), rec)
	if err != nil {
		return a.httpError("record configuration status", err, "device", rec.Device)
	}
	if changed {
		attrs := []any{"device", rec.Device, "digest", rec.Digest, "state", rec.State, "via", rec.Via}
		switch rec.State {
		case devconfig.Failed:
			a.log.Warn("device configuration failed", append(attrs, "script", rec.Script, "exit_code", rec.ExitCode,
				"output_tail", tailString(rec.Output, 200))...)
		case devconfig.Drifted:
			a.log.Warn("device configuration drifted: the applied file was changed on the device", append(attrs, "file_digest", rec.FileDigest)...)
		default:
			// One line per device would flood the log when a commit
			// reaches the fleet; the management API counts them.
			a.log.Debug("device configuration applied", attrs...)
		}
	}
	return c.NoContent(http.StatusNoContent)
}

// scrubSecrets replaces every secret value of the device's configuration
// in text with "<secret>".
func (a *API) scrubSecrets(ctx context.Context, s *session, text string) (string, error) {
	values, _, ok, err := a.desiredConfig(ctx, s)
	if err != nil || !ok {
		return text, err
	}
	src := a.opts.Config(s.snap)
	for k, v := range values {
		if v != "" && src.Secret(k) {
			text = strings.ReplaceAll(text, v, "<secret>")
		}
	}
	return text, nil
}

// tailString returns the last n bytes of s, cut at a rune boundary.
func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[len(s)-n:], "")
}
