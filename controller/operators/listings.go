package operators

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
)

// Device is one entry of the device listing, in the shape of Mender's
// devauth v2 (what mender-cli devices list decodes).
type Device struct {
	ID              string            `json:"id"`
	IdentityData    map[string]string `json:"identity_data"`
	Status          string            `json:"status"`
	CreatedTs       string            `json:"created_ts"`
	UpdatedTs       string            `json:"updated_ts"`
	AuthSets        []AuthSet         `json:"auth_sets"`
	Decommissioning bool              `json:"decommissioning"`
	// Name is the device's name in Git (not in Mender's shape; mender-cli
	// ignores it).
	Name string `json:"name"`
}

// AuthSet is the one authentication set Gitfleet knows of a device: its
// bound key, by fingerprint.
type AuthSet struct {
	ID           string            `json:"id"`
	PubKey       string            `json:"pubkey"`
	IdentityData map[string]string `json:"identity_data"`
	Status       string            `json:"status"`
	Ts           string            `json:"ts"`
}

// Listing bounds, as Mender's: ?page (from 1) and ?per_page (default 20).
const (
	defaultPerPage = 20
	maxPerPage     = 500
)

func paging(ctx *echo.Context) (page, perPage int, err error) {
	page, perPage = 1, defaultPerPage
	if s := ctx.QueryParam("page"); s != "" {
		if page, err = strconv.Atoi(s); err != nil || page < 1 {
			return 0, 0, echo.NewHTTPError(http.StatusBadRequest, "page must be an integer from 1")
		}
	}
	if s := ctx.QueryParam("per_page"); s != "" {
		if perPage, err = strconv.Atoi(s); err != nil || perPage < 1 || perPage > maxPerPage {
			return 0, 0, echo.NewHTTPError(http.StatusBadRequest, "per_page must be 1…"+strconv.Itoa(maxPerPage))
		}
	}
	return page, perPage, nil
}

// listDevices answers mender-cli devices list: the devices the operator's
// access covers that have authenticated at least once, in the order the
// live commit declares them (?page, ?per_page; ?status=accepted, the only
// status a listed device has).
func (a *Access) listDevices(ctx *echo.Context) error {
	name, err := a.requireOperator(ctx)
	if err != nil {
		return err
	}
	page, perPage, err := paging(ctx)
	if err != nil {
		return err
	}
	out := []Device{}
	if st := ctx.QueryParam("status"); st != "" && st != string(store.DeviceAccepted) {
		return ctx.JSON(http.StatusOK, out)
	}
	rctx := ctx.Request().Context()
	devs, err := a.Devices(rctx, name, (page-1)*perPage, perPage)
	if err != nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "store: "+err.Error())
	}
	for _, t := range devs {
		out = append(out, deviceEntry(t))
	}
	return ctx.JSON(http.StatusOK, out)
}

func deviceEntry(t *target) Device {
	ts := func(x time.Time) string { return x.UTC().Format(time.RFC3339) }
	d := Device{ID: t.id, Name: t.name, IdentityData: t.identity, Status: string(t.rec.Status),
		CreatedTs: ts(t.rec.FirstSeen), UpdatedTs: ts(t.rec.LastSeen)}
	if d.IdentityData == nil {
		d.IdentityData = map[string]string{}
	}
	d.AuthSets = []AuthSet{{ID: t.rec.KeyFingerprint, PubKey: "", IdentityData: d.IdentityData, Status: d.Status, Ts: d.UpdatedTs}}
	return d
}

// Devices returns the devices operator may open sessions to under the live
// commit and that the store knows (they authenticated), skipping the
// first skip of them and returning at most limit. Devices declared by key
// alone (no identity) have no ID to look up and are not listed; DeviceCA
// devices are listed when the access names them.
func (a *Access) Devices(ctx context.Context, operator string, skip, limit int) ([]*target, error) {
	snap := a.opts.Live()
	if snap == nil || snap.Fleet == nil {
		return nil, nil
	}
	o := snap.Fleet.Operator(operator)
	if o == nil || o.Expired(a.opts.Now()) {
		return nil, nil
	}
	ix := a.indexOf(snap)
	// What may cover a device, decided before reading its record: its
	// name (listed, or a static member of a listed group), or a listed
	// group's selector whose identity part matches.
	static := map[string]bool{}
	var selectors []*schema.Selector
	for _, e := range o.Spec.Access {
		for _, n := range e.Devices {
			static[n] = true
		}
		for _, gn := range e.Groups {
			if g := ix.groups[gn]; g != nil {
				for _, m := range g.Spec.Members {
					static[m] = true
				}
				if g.Spec.Selector != nil {
					selectors = append(selectors, g.Spec.Selector)
				}
			}
		}
	}
	mayCover := func(d *schema.Device) bool {
		if static[d.Name] {
			return true
		}
		for _, sel := range selectors {
			if (&schema.Selector{Identity: sel.Identity}).Matches(d.Spec.Identity, nil) {
				return true
			}
		}
		return false
	}
	var out []*target
	seen := map[string]bool{}
	consider := func(d *schema.Device) error {
		if len(d.Spec.Identity) == 0 || seen[d.Name] || !mayCover(d) {
			return nil
		}
		seen[d.Name] = true
		t := &target{name: d.Name, identity: d.Spec.Identity, id: deviceapi.DeviceID(deviceapi.Attributes(d.Spec.Identity))}
		// Static coverage first: a selector may need the stored
		// inventory, which is read once for both.
		rec, err := a.opts.Store.Device(ctx, t.id)
		switch {
		case err == nil:
			t.rec = &rec
		case isNotFound(err):
			return nil
		default:
			return err
		}
		if rec.Status != store.DeviceAccepted || !covers(o, ix, t).listed {
			return nil
		}
		if skip > 0 {
			skip--
			return nil
		}
		out = append(out, t)
		return nil
	}
	for i := range snap.Fleet.Devices {
		if len(out) >= limit {
			break
		}
		if err := consider(&snap.Fleet.Devices[i]); err != nil {
			return nil, err
		}
	}
	for _, e := range o.Spec.Access {
		for _, n := range e.Devices {
			if len(out) >= limit {
				break
			}
			if snap.Fleet.Device(n) != nil {
				continue // listed above
			}
			if d := declared(snap, n); d != nil {
				if err := consider(d); err != nil {
					return nil, err
				}
			}
		}
	}
	return out, nil
}

// Artifact is one entry of the artifact listing, in the shape of Mender's
// deployments API (what mender-cli artifacts list decodes).
type Artifact struct {
	ID                    string   `json:"id"`
	Name                  string   `json:"name"`
	Description           string   `json:"description"`
	DeviceTypesCompatible []string `json:"device_types_compatible"`
	Info                  struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	} `json:"info"`
	Signed           bool  `json:"signed"`
	Updates          []any `json:"updates"`
	ArtifactProvides struct {
		ArtifactName string `json:"artifact_name"`
	} `json:"artifact_provides"`
	ArtifactDepends struct {
		DeviceType []string `json:"device_type"`
	} `json:"artifact_depends"`
	Size     int       `json:"size"`
	Modified time.Time `json:"modified"`
}

// listArtifacts answers mender-cli artifacts list: the live commit's
// Artifact manifests.
func (a *Access) listArtifacts(ctx *echo.Context) error {
	if _, err := a.requireOperator(ctx); err != nil {
		return err
	}
	out := []Artifact{}
	snap := a.opts.Live()
	if snap == nil || snap.Fleet == nil {
		return ctx.JSON(http.StatusOK, out)
	}
	for i := range snap.Fleet.Artifacts {
		m := &snap.Fleet.Artifacts[i]
		x := Artifact{ID: m.Name, Name: m.ArtifactName(), DeviceTypesCompatible: m.Spec.DeviceTypes,
			Description: "declared in " + m.Source.String() + ", from " + m.Spec.Source,
			Signed:      len(m.Spec.SignedBy) > 0, Updates: []any{}, Modified: snap.Commit.Committed.UTC()}
		x.Info.Format, x.Info.Version = "mender", 3
		x.ArtifactProvides.ArtifactName = m.ArtifactName()
		x.ArtifactDepends.DeviceType = m.Spec.DeviceTypes
		out = append(out, x)
	}
	return ctx.JSON(http.StatusOK, out)
}

func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
