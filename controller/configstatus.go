package controller

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/deviceconfig"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/devconfig"
	"github.com/labstack/echo/v5"
)

// Configuration states of a device, as the management API reports them.
const (
	ConfigInSync  = "in_sync" // it applied the configuration the live commit gives it
	ConfigPending = "pending" // it has not reported that configuration yet
	ConfigDrifted = "drifted" // it applied it, then its file was changed on the device
	ConfigFailed  = "failed"  // an apply script failed on it
)

// ConfigSummary is one DeviceConfig's status over the devices it applies
// to: how many run the configuration the live commit gives them.
type ConfigSummary struct {
	Name    string   `json:"name"`
	Level   string   `json:"level"`             // fleet, group or device
	Groups  []string `json:"groups,omitempty"`  // its target, as written
	Devices []string `json:"devices,omitempty"` // its target, as written
	Keys    []string `json:"keys"`              // the keys it sets (values and secrets; never a value)
	Secrets []string `json:"secrets,omitempty"` // which of Keys are secrets
	Targets int      `json:"targets"`           // devices it applies to
	InSync  int      `json:"in_sync"`
	Pending int      `json:"pending"`
	Drifted int      `json:"drifted"`
	Failed  int      `json:"failed"`
	// Problems lists the failed and drifted devices (at most
	// maxConfigProblems), with the reason.
	Problems []DeviceConfigState `json:"problems,omitempty"`
}

// DeviceConfigState is one device's configuration state.
type DeviceConfigState struct {
	Device   string `json:"device"`
	State    string `json:"state"`              // ConfigInSync, ConfigPending, ConfigDrifted, ConfigFailed
	Desired  string `json:"desired"`            // the digest the live commit gives it
	Reported string `json:"reported,omitempty"` // the digest it last reported
	Via      string `json:"via,omitempty"`
	Script   string `json:"script,omitempty"` // failed: the script, its exit code and output tail
	ExitCode int    `json:"exit_code,omitempty"`
	Output   string `json:"output,omitempty"`
	Since    string `json:"since,omitempty"` // RFC 3339: since when it reports this
}

const maxConfigProblems = 100

// configStatus serves GET /api/management/v1/config: per DeviceConfig of
// the live commit, the devices it applies to and how many of them run the
// configuration the commit gives them (in sync, pending, drifted,
// failed), with the failed and drifted devices and why.
func (c *Controller) configStatus(ctx *echo.Context) error {
	snap := c.rec.Live()
	if snap == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "no commit is served yet")
	}
	states, err := c.deviceConfigStates(ctx.Request().Context(), snap)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	out := []ConfigSummary{}
	for _, info := range snap.Config.Configs() {
		sum := ConfigSummary{Name: info.Name, Level: levelName(info), Groups: info.Groups, Devices: info.Devices,
			Keys: slices.Sorted(slices.Values(append(slices.Clone(info.Values), info.Secrets...))), Secrets: info.Secrets}
		for _, st := range states {
			if !st.covered(snap.Config, info.Name) {
				continue
			}
			sum.Targets++
			switch st.State {
			case ConfigInSync:
				sum.InSync++
			case ConfigPending:
				sum.Pending++
			case ConfigDrifted:
				sum.Drifted++
			case ConfigFailed:
				sum.Failed++
			}
			if (st.State == ConfigFailed || st.State == ConfigDrifted) && len(sum.Problems) < maxConfigProblems {
				sum.Problems = append(sum.Problems, st.DeviceConfigState)
			}
		}
		out = append(out, sum)
	}
	return ctx.JSON(http.StatusOK, map[string]any{"commit": snap.Commit.SHA, "configs": out})
}

// configDevices serves GET /api/management/v1/config/devices?config=NAME
// &state=STATE&limit=N: the devices (of one DeviceConfig, or all) and
// their configuration state, by name.
func (c *Controller) configDevices(ctx *echo.Context) error {
	snap := c.rec.Live()
	if snap == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "no commit is served yet")
	}
	cfg, state := ctx.QueryParam("config"), ctx.QueryParam("state")
	if cfg != "" {
		if _, ok := snap.Config.Config(cfg); !ok {
			return echo.NewHTTPError(http.StatusBadRequest, unknownName("DeviceConfig", cfg, snap.Commit.SHA, func(yield func(string) bool) {
				for _, i := range snap.Config.Configs() {
					if !yield(i.Name) {
						return
					}
				}
			}))
		}
	}
	switch state {
	case "", ConfigInSync, ConfigPending, ConfigDrifted, ConfigFailed:
	default:
		return echo.NewHTTPError(http.StatusBadRequest, "state "+strconv.Quote(state)+" is not one of in_sync, pending, drifted, failed")
	}
	limit, err := pageLimit(ctx)
	if err != nil {
		return err
	}
	states, err := c.deviceConfigStates(ctx.Request().Context(), snap)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	out := []DeviceConfigState{}
	for _, st := range states {
		if (cfg == "" || st.covered(snap.Config, cfg)) && (state == "" || st.State == state) {
			out = append(out, st.DeviceConfigState)
			if len(out) == limit {
				break
			}
		}
	}
	return ctx.JSON(http.StatusOK, map[string]any{"commit": snap.Commit.SHA, "devices": out})
}

type deviceConfigState struct {
	DeviceConfigState
	identity, inventory map[string]string
}

func (s *deviceConfigState) covered(set *deviceconfig.Set, cfg string) bool {
	return set.Covers(cfg, s.Device, s.identity, s.inventory)
}

// deviceConfigStates returns the configuration state of every device the
// live commit declares, sorted by name: what it should run (Set.For) next
// to what it reported (the store, read in batches).
func (c *Controller) deviceConfigStates(ctx context.Context, snap *reconcile.Snapshot) ([]*deviceConfigState, error) {
	devs := snap.Fleet.Devices
	names := make([]string, 0, len(devs))
	out := make([]*deviceConfigState, 0, len(devs))
	for i := range devs {
		d := &devs[i]
		ident := deviceapi.Attributes(d.Spec.Identity)
		st := &deviceConfigState{DeviceConfigState: DeviceConfigState{Device: d.Name}, identity: ident}
		if snap.Config.NeedsInventory() && len(ident) > 0 {
			rec, err := c.opts.Store.Device(ctx, deviceapi.DeviceID(ident))
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
			st.inventory = deviceapi.InventoryAttributes(rec.Inventory)
		}
		_, st.Desired = snap.Config.For(d.Name, st.identity, st.inventory)
		names = append(names, d.Name)
		out = append(out, st)
	}
	reported, err := c.opts.Store.ConfigStatusOf(ctx, names)
	if err != nil {
		return nil, err
	}
	for _, st := range out {
		r, ok := reported[st.Device]
		st.State = ConfigPending
		if !ok {
			continue
		}
		st.Reported, st.Via, st.Since = r.Digest, r.Via, r.Since.UTC().Format("2006-01-02T15:04:05Z07:00")
		if r.Digest != st.Desired {
			continue // it runs another configuration: this one is pending
		}
		switch r.State {
		case devconfig.Applied:
			st.State = ConfigInSync
		case devconfig.Drifted:
			st.State = ConfigDrifted
		case devconfig.Failed:
			st.State, st.Script, st.ExitCode, st.Output = ConfigFailed, r.Script, r.ExitCode, r.Output
		}
	}
	slices.SortFunc(out, func(a, b *deviceConfigState) int {
		switch {
		case a.Device < b.Device:
			return -1
		case a.Device > b.Device:
			return 1
		}
		return 0
	})
	return out, nil
}

func levelName(i deviceconfig.Info) string {
	switch {
	case len(i.Devices) > 0:
		return "device"
	case len(i.Groups) > 0:
		return "group"
	}
	return "fleet"
}
