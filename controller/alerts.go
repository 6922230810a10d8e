package controller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
)

// alerts serves GET /api/management/v1/alerts: the records of what
// devices' monitoring reported (store.Alert), the most recently changed
// first, as {"alerts": […]}. What `gitfleet alerts` shows.
//
// Query parameters, all optional:
//
//	device=NAME     a Device (manifest name) of the live commit
//	check=NAME      a MonitorCheck of the live commit
//	group=NAME      a DeviceGroup of the live commit: its members and the
//	                devices its selector matches
//	severity=S      critical, error, warning or info
//	state=S         open, closed or error (the check cannot run)
//	limit=N         1…1000, default 100
//
// A name the live commit does not declare, an unknown severity or state,
// and a bad limit are 400. Names are checked against the commit this
// replica serves; alerts of a device or check since removed from Git can
// be listed only without that filter.
//
// A group is resolved here, not in the store: the store is asked for the
// store.MaxPage most recently changed alerts matching the other filters,
// and those of the group's devices are kept, up to limit. So when more
// than store.MaxPage alerts of other devices changed more recently, older
// alerts of the group are not listed; narrow the query (check, state,
// severity) to reach them. With device as well, the device's membership is
// decided once and the store filters by device, so nothing is missed.
//
// A selector matches a device by the identity its manifest declares and
// the inventory it last reported (found in the store by the device ID that
// identity gives). A device declared by its key alone (no identity) is a
// member only by the group's static members.
func (c *Controller) alerts(ctx *echo.Context) error {
	limit, err := pageLimit(ctx)
	if err != nil {
		return err
	}
	q := ctx.QueryParams()
	f := store.AlertFilter{Device: q.Get("device"), Check: q.Get("check"), Severity: q.Get("severity"), State: q.Get("state"), Limit: limit}
	switch schema.Severity(f.Severity) {
	case "", schema.SeverityCritical, schema.SeverityError, schema.SeverityWarning, schema.SeverityInfo:
	default:
		return echo.NewHTTPError(http.StatusBadRequest, fmt.Sprintf("severity %q is not one of critical, error, warning, info", f.Severity))
	}
	if f, err = store.ValidateAlertFilter(f); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	group := q.Get("group")
	rctx := ctx.Request().Context()

	var members *groupMembers
	if f.Device != "" || f.Check != "" || group != "" {
		snap := c.rec.Live()
		if snap == nil || snap.Fleet == nil {
			return echo.NewHTTPError(http.StatusServiceUnavailable, "no commit served yet: device, check and group name manifests of the live commit; try again once one is served")
		}
		fleet, sha := snap.Fleet, shortSHA(snap.Commit.SHA)
		if f.Device != "" && c.declaredDevice(snap, f.Device) == nil {
			return echo.NewHTTPError(http.StatusBadRequest, unknownName("Device", f.Device, sha, namesOf(fleet.Devices)))
		}
		if f.Check != "" && fleet.Check(f.Check) == nil {
			return echo.NewHTTPError(http.StatusBadRequest, unknownName("MonitorCheck", f.Check, sha, namesOf(fleet.Checks)))
		}
		if group != "" {
			g := fleet.Group(group)
			if g == nil {
				return echo.NewHTTPError(http.StatusBadRequest, unknownName("DeviceGroup", group, sha, namesOf(fleet.Groups)))
			}
			members = newGroupMembers(c, snap, g)
		}
	}
	if members != nil && f.Device != "" {
		in, err := members.has(rctx, f.Device)
		if err != nil {
			return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
		}
		if !in {
			return ctx.JSON(http.StatusOK, map[string]any{"alerts": []store.Alert{}})
		}
		members = nil // the store's device filter is the whole answer
	}
	if members != nil {
		f.Limit = store.MaxPage
	}
	as, err := c.opts.Store.ListAlerts(rctx, f)
	if errors.Is(err, store.ErrInvalid) {
		return echo.NewHTTPError(http.StatusBadRequest, err.Error())
	}
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	if members != nil {
		kept := as[:0]
		for _, a := range as {
			if len(kept) == limit {
				break
			}
			in, err := members.has(rctx, a.Device)
			if err != nil {
				return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
			}
			if in {
				kept = append(kept, a)
			}
		}
		as = kept
	}
	if as == nil {
		as = []store.Alert{}
	}
	return ctx.JSON(http.StatusOK, map[string]any{"alerts": as})
}

// groupMembers decides which devices belong to one DeviceGroup of a
// snapshot, remembering each answer (one store read at most per device).
type groupMembers struct {
	c      *Controller
	snap   *reconcile.Snapshot
	group  *schema.DeviceGroup
	static map[string]bool
	seen   map[string]bool
}

func newGroupMembers(c *Controller, snap *reconcile.Snapshot, g *schema.DeviceGroup) *groupMembers {
	m := &groupMembers{c: c, snap: snap, group: g, static: make(map[string]bool, len(g.Spec.Members)), seen: map[string]bool{}}
	for _, name := range g.Spec.Members {
		m.static[name] = true
	}
	return m
}

// has reports whether the device called name is a member: one of the
// group's static members, or a declared device its selector matches on
// the identity its manifest declares and the inventory it last reported.
func (m *groupMembers) has(ctx context.Context, name string) (bool, error) {
	if m.static[name] {
		return true, nil
	}
	sel := m.group.Spec.Selector
	if sel == nil {
		return false, nil
	}
	if in, ok := m.seen[name]; ok {
		return in, nil
	}
	in, err := m.matches(ctx, sel, name)
	if err != nil {
		return false, err
	}
	m.seen[name] = in
	return in, nil
}

func (m *groupMembers) matches(ctx context.Context, sel *schema.Selector, name string) (bool, error) {
	d := m.c.declaredDevice(m.snap, name)
	if d == nil {
		return false, nil // no longer declared: no identity to match
	}
	identity := d.Spec.Identity
	if !(&schema.Selector{Identity: sel.Identity}).Matches(identity, nil) {
		return false, nil // decided without reading the store
	}
	if len(sel.Inventory) == 0 {
		return true, nil
	}
	if len(identity) == 0 {
		return false, nil // declared by its key alone: its record cannot be found by name
	}
	rec, err := m.c.opts.Store.Device(ctx, deviceapi.DeviceID(deviceapi.Attributes(identity)))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil // never authenticated: no inventory
	case err != nil:
		return false, fmt.Errorf("read device %s: %w", name, err)
	}
	return sel.Matches(identity, deviceapi.InventoryAttributes(rec.Inventory)), nil
}

// declaredDevice returns snap's Device manifest called name, or the device
// a DeviceCA names so (deviceca.go), or nil. It
// uses the controller's index of the live commit's device names (built
// once per snapshot), so a lookup costs a binary search.
func (c *Controller) declaredDevice(snap *reconcile.Snapshot, name string) *schema.Device {
	idx := c.names.Load()
	if idx == nil || idx.snap != snap {
		devs := snap.Fleet.Devices
		idx = &deviceNames{snap: snap, order: make([]int32, len(devs))}
		for i := range idx.order {
			idx.order[i] = int32(i)
		}
		slices.SortFunc(idx.order, func(a, b int32) int { return strings.Compare(devs[a].Name, devs[b].Name) })
		if snap == c.rec.Live() {
			c.names.Store(idx)
		}
	}
	devs := snap.Fleet.Devices
	i, found := slices.BinarySearchFunc(idx.order, name, func(i int32, name string) int { return strings.Compare(devs[i].Name, name) })
	if !found {
		return certDevice(snap, name) // admitted by a DeviceCA, or nil
	}
	return &devs[idx.order[i]]
}

// unknownName is the message for a name the live commit does not declare,
// with the declared names closest to it when there are any.
func unknownName(kind, name, sha string, declared func(yield func(string) bool)) string {
	msg := fmt.Sprintf("no %s called %q in the live commit %s", kind, name, sha)
	if near := nearNames(name, declared); len(near) > 0 {
		msg += "; it declares " + strings.Join(near, ", ")
	}
	return msg
}

// nearNames returns up to maxNear declared names that resemble name: those
// sharing the longest prefix with it (at least minNearPrefix bytes, case
// aside) or containing it. When there are at most maxNear names, all of
// them.
func nearNames(name string, declared func(yield func(string) bool)) []string {
	const maxNear, minNearPrefix = 5, 3
	lower := strings.ToLower(name)
	var all []string
	type scored struct {
		name  string
		score int
	}
	var near []scored
	for n := range declared {
		if len(all) <= maxNear {
			all = append(all, n)
		}
		ln := strings.ToLower(n)
		score := commonPrefix(lower, ln)
		if lower != "" && strings.Contains(ln, lower) {
			score = max(score, len(lower))
		}
		if score >= minNearPrefix {
			near = append(near, scored{n, score})
		}
	}
	if len(all) <= maxNear {
		slices.Sort(all)
		return all
	}
	slices.SortFunc(near, func(a, b scored) int {
		if a.score != b.score {
			return b.score - a.score
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, 0, maxNear)
	for _, s := range near[:min(len(near), maxNear)] {
		out = append(out, s.name)
	}
	return out
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// namesOf yields the names of manifests.
func namesOf[T any, P interface {
	*T
	schema.Manifest
}](s []T) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for i := range s {
			if !yield(P(&s[i]).Metadata().Name) {
				return
			}
		}
	}
}

// shortSHA is the first 12 characters of a commit SHA.
func shortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
