package rollout

import (
	"cmp"
	"fmt"
	"math"
	"math/bits"
	"reflect"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // windows decide the same on every machine, whatever its zoneinfo
	"unsafe"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// A Plan is a Snapshot's rollouts compiled for decisions. It is immutable
// and safe for concurrent use; build one per Snapshot and keep it beside
// it.
type Plan struct {
	fleet    *schema.Fleet    // what it was compiled from (CompileFrom)
	devices  map[string]int32 // declared device name → index
	unique   bool             // no name declared twice: Device.Declared is trusted (index)
	certs    bool             // the fleet declares DeviceCAs: see deviceca.go
	rollouts []*plan          // priority order: highest first, then by name
	byName   map[string]*plan
	problems []string
}

// plan is one compiled rollout.
type plan struct {
	ro       *schema.Rollout
	art      *schema.Artifact
	artName  string // artifact_name
	artGroup string // provides artifact_group
	gen      store.GenerationRef
	recorded bool

	// Targeting. yes: declared devices certainly targeted; maybe: declared
	// devices a runtime selector decides (open targets only), checked
	// against selectors at poll time.
	exact     bool
	yes       bitset
	maybe     bitset
	selectors []*schema.Selector
	size      int // N (exact) or the candidate count C

	phases []phase
	window []window

	versionKeys []string // provides of the artifact ending in ".version"
	approved    []bool   // per phase: gate open

	exactTarget bool // exact as target left it, before openToCerts (for CompileFrom)

	timeout time.Duration // spec.deviceTimeout in effect
	online  time.Duration // spec.onlineWindow in effect
	keys    []keyT        // exact targets: the target by rank
	open    bool          // also targets devices admitted by a DeviceCA (deviceca.go)
}

type phase struct {
	name  string
	cum   int64 // L(k)
	limit int64 // L(k) − L(k−1)
	hold  time.Duration
	// Membership. Exact targets: a device is in phase ≤ k when its key is
	// below bound (all when full). Open targets: count phases take
	// anybody (arrival order); percent phases devices with hash < bound.
	bound keyT
	full  bool
	count bool // count phase of an open target
	abort schema.AbortCriteria
}

// keyT orders devices in a rollout: hash, then ID.
type keyT struct {
	h  uint64
	id string
}

func (a keyT) less(b keyT) bool { return a.h < b.h || a.h == b.h && a.id < b.id }

type bitset []uint64

func newBitset(n int) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) set(i int)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i int) bool { return i/64 < len(b) && b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) count() (n int) {
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// Compile builds the Plan of fleet. records are the store's rollout
// records (store.Generations.Rollouts) for the fleet's commit: a rollout
// without a record, or whose record is stopped, admits nobody
// (ReasonNotRecorded). Compile does not fail; what it cannot use it
// reports in Problems, and such a rollout targets nobody.
func Compile(fleet *schema.Fleet, records []store.RolloutRecord) *Plan {
	return CompileFrom(nil, fleet, records)
}

// CompileFrom is Compile, reusing what prev (the Plan of an earlier
// commit, or nil) computed over the declared devices when fleet has the
// very same devices as prev's fleet (schema.Fleet.SameDevices: the loader
// shares them between commits that changed no device declaration): the
// index of device names, and each rollout's target and rank order when
// the rollout's name, target, artifact device types and the groups its
// target names are unchanged. Those are what a Compile costs in
// proportion to the fleet (hashing and sorting a million devices for a
// rollout of them all); a commit that changes a rollout's phases, gates
// or abort criteria then compiles in proportion to its rollouts.
func CompileFrom(prev *Plan, fleet *schema.Fleet, records []store.RolloutRecord) *Plan {
	p := &Plan{fleet: fleet, byName: make(map[string]*plan, len(fleet.Rollouts)), certs: len(fleet.DeviceCAs) > 0}
	if prev == nil || prev.fleet == nil || !prev.fleet.SameDevices(fleet) {
		prev = nil
	}
	if prev != nil {
		p.devices = prev.devices // read-only once built
	} else {
		p.devices = make(map[string]int32, len(fleet.Devices))
		for i := range fleet.Devices {
			if _, dup := p.devices[fleet.Devices[i].Name]; !dup {
				p.devices[fleet.Devices[i].Name] = int32(i)
			}
		}
	}
	p.unique = len(p.devices) == len(fleet.Devices)
	recs := make(map[string]*store.RolloutRecord, len(records))
	for i := range records {
		recs[records[i].Name] = &records[i]
	}
	groups := make(map[string]*schema.DeviceGroup, len(fleet.Groups))
	for i := range fleet.Groups {
		groups[fleet.Groups[i].Name] = &fleet.Groups[i]
	}
	for i := range fleet.Rollouts {
		ro := &fleet.Rollouts[i]
		pl, err := p.compile(fleet, ro, groups, recs[ro.Name], prev)
		if err != nil {
			p.problems = append(p.problems, fmt.Sprintf("rollout %s: %v", ro.Name, err))
			continue
		}
		p.rollouts = append(p.rollouts, pl)
		p.byName[ro.Name] = pl
	}
	slices.SortFunc(p.rollouts, func(a, b *plan) int {
		if c := cmp.Compare(b.ro.Spec.Priority, a.ro.Spec.Priority); c != 0 {
			return c
		}
		return strings.Compare(a.ro.Name, b.ro.Name)
	})
	return p
}

func (p *Plan) compile(fleet *schema.Fleet, ro *schema.Rollout, groups map[string]*schema.DeviceGroup, rec *store.RolloutRecord, earlier *Plan) (*plan, error) {
	art := fleet.Artifact(ro.Spec.Artifact)
	switch {
	case art == nil:
		return nil, fmt.Errorf("unknown artifact %q", ro.Spec.Artifact)
	case len(ro.Spec.Phases) == 0:
		return nil, fmt.Errorf("no phases")
	case len(ro.Spec.Phases) > store.MaxPhases:
		return nil, fmt.Errorf("%d phases, at most %d", len(ro.Spec.Phases), store.MaxPhases)
	}
	pl := &plan{ro: ro, art: art, artName: art.ArtifactName(), artGroup: art.Spec.Provides["artifact_group"]}
	if rec != nil && !rec.Stopped && rec.Generation > 0 {
		pl.gen, pl.recorded = store.GenerationRef{Rollout: ro.Name, Generation: rec.Generation}, true
	}
	for k, v := range art.Spec.Provides {
		if strings.HasSuffix(k, ".version") && v != "" {
			pl.versionKeys = append(pl.versionKeys, k)
		}
	}
	slices.Sort(pl.versionKeys)
	for _, w := range ro.Spec.MaintenanceWindows {
		cw, err := compileWindow(w)
		if err != nil {
			return nil, err
		}
		pl.window = append(pl.window, cw)
	}
	same := earlier.sameTarget(pl, fleet, groups)
	if same != nil {
		pl.selectorsOf(groups)
		pl.yes, pl.maybe, pl.exact, pl.size = same.yes, same.maybe, same.exactTarget, same.size
	} else {
		pl.target(fleet, groups)
	}
	pl.exactTarget = pl.exact
	pl.openToCerts(fleet)
	pl.timeout, pl.online = ro.Spec.Timeout(), ro.Spec.Window()

	// Phase sizes and boundaries.
	var keys []keyT
	if pl.exact && same != nil && same.exact {
		keys = same.keys // the same devices, rollout and target: the same order
		pl.keys = keys
	} else if pl.exact {
		keys = make([]keyT, 0, pl.size)
		for i := range fleet.Devices {
			if pl.yes.has(i) {
				id := fleet.Devices[i].Name
				keys = append(keys, keyT{Key(ro.Name, id), id})
			}
		}
		slices.SortFunc(keys, func(a, b keyT) int {
			if c := cmp.Compare(a.h, b.h); c != 0 {
				return c
			}
			return strings.Compare(a.id, b.id)
		})
		pl.keys = keys
	}
	n := int64(pl.size)
	if pl.open {
		n = openCertSize
	}
	var prev int64
	for _, sp := range ro.Spec.Phases {
		ph := phase{name: sp.Name, hold: sp.Hold.Duration, abort: sp.Abort}
		var l int64
		if sp.Count > 0 {
			l = int64(sp.Count)
		} else {
			l = ceilPercent(sp.Percent, n)
		}
		if pl.exact {
			l = min(l, n)
		}
		l = max(l, prev)
		ph.cum, ph.limit = l, l-prev
		switch {
		case pl.exact && l >= n:
			ph.full = true
		case pl.exact:
			ph.bound = keys[l]
		case sp.Count > 0:
			ph.count = true
		case sp.Percent >= 100:
			ph.full = true
		default:
			ph.bound = keyT{h: uint64(math.Ldexp(sp.Percent/100, 64))}
		}
		pl.phases = append(pl.phases, ph)
		pl.approved = append(pl.approved, ro.Approved(sp.Name))
		prev = l
	}
	return pl, nil
}

// ceilPercent is ceil(pct × n / 100), taking a product within 1e-9 of an
// integer as that integer (33.3 % of 1000 is 333, not 334).
func ceilPercent(pct float64, n int64) int64 {
	x := pct * float64(n) / 100
	if r := math.Round(x); math.Abs(x-r) <= 1e-9*max(1, x) {
		return int64(r)
	}
	return int64(math.Ceil(x))
}

// certainty of an offline match.
type certainty uint8

const (
	no certainty = iota
	maybe
	yes
)

// selectorsOf sets the rollout's selectors: its target's and those of
// the groups it names.
func (pl *plan) selectorsOf(groups map[string]*schema.DeviceGroup) {
	t := &pl.ro.Spec.Target
	for _, g := range t.Groups {
		if grp := groups[g]; grp != nil && grp.Spec.Selector != nil {
			pl.selectors = append(pl.selectors, grp.Spec.Selector)
		}
	}
	if t.Selector != nil {
		pl.selectors = append(pl.selectors, t.Selector)
	}
}

// sameTarget returns the compiled rollout of p (an earlier Plan over the
// same devices, or nil) whose targeting pl can take over: the same
// rollout name, target, artifact device types and named groups. nil when
// there is none.
func (p *Plan) sameTarget(pl *plan, fleet *schema.Fleet, groups map[string]*schema.DeviceGroup) *plan {
	if p == nil {
		return nil
	}
	old := p.byName[pl.ro.Name]
	if old == nil || !reflect.DeepEqual(old.ro.Spec.Target, pl.ro.Spec.Target) ||
		!slices.Equal(old.art.Spec.DeviceTypes, pl.art.Spec.DeviceTypes) {
		return nil
	}
	for _, g := range pl.ro.Spec.Target.Groups {
		was, is := p.fleet.Group(g), groups[g]
		if (was == nil) != (is == nil) || was != nil && !reflect.DeepEqual(was.Spec, is.Spec) {
			return nil
		}
	}
	return old
}

// target resolves the rollout's target over the declared devices.
func (pl *plan) target(fleet *schema.Fleet, groups map[string]*schema.DeviceGroup) {
	t := &pl.ro.Spec.Target
	n := len(fleet.Devices)
	pl.yes, pl.maybe = newBitset(n), newBitset(n)
	static := make(map[string]bool)
	for _, d := range t.Devices {
		static[d] = true
	}
	for _, g := range t.Groups {
		if grp := groups[g]; grp != nil {
			for _, m := range grp.Spec.Members {
				static[m] = true
			}
		}
	}
	pl.selectorsOf(groups)
	pl.exact = true
	for i := range fleet.Devices {
		d := &fleet.Devices[i]
		if d.Spec.DeviceType != "" && !slices.Contains(pl.art.Spec.DeviceTypes, d.Spec.DeviceType) {
			continue // certainly incompatible: not part of the target's size
		}
		c := no
		if t.All || static[d.Name] {
			c = yes
		}
		for _, s := range pl.selectors {
			if c == yes {
				break
			}
			c = max(c, matchOffline(s, d))
		}
		switch c {
		case yes:
			pl.yes.set(i)
		case maybe:
			pl.maybe.set(i)
			pl.exact = false
		}
	}
	pl.size = pl.yes.count() + pl.maybe.count()
}

// matchOffline decides whether declared device d matches s from its
// manifest: identity attributes it declares, and device_type when it
// declares one. Anything else only the device can tell.
func matchOffline(s *schema.Selector, d *schema.Device) certainty {
	c := yes
	for attr, m := range s.Identity {
		v, ok := d.Spec.Identity[attr]
		switch {
		case !ok:
			c = maybe
		case !m.Matches(v):
			return no
		}
	}
	for attr, m := range s.Inventory {
		switch {
		case attr != "device_type" || d.Spec.DeviceType == "":
			c = maybe
		case !m.Matches(d.Spec.DeviceType):
			return no
		}
	}
	return c
}

// Problems lists what Compile could not use, in words.
func (p *Plan) Problems() []string { return slices.Clone(p.problems) }

// targets reports whether pl targets d (index i in the fleet, or -1).
func (pl *plan) targets(d *Device, i int) bool {
	if i < 0 {
		return false
	}
	if pl.yes.has(i) {
		return true
	}
	if !pl.maybe.has(i) {
		return false
	}
	for _, s := range pl.selectors {
		if s.Matches(d.Identity, d.Inventory) {
			return true
		}
	}
	return false
}

// NeedsInventory reports whether routing the declared device id may depend
// on the inventory it reports: some rollout that could take it before a
// rollout that certainly does has a selector over inventory attributes.
// When it returns false, Route and Next ignore Device.Inventory, so a
// caller can skip reading it.
func (p *Plan) NeedsInventory(id string) bool {
	return p.NeedsInventoryOf(&Device{ID: id})
}

// NeedsInventoryOf is NeedsInventory for d, which it finds by
// d.Declared when set.
func (p *Plan) NeedsInventoryOf(d *Device) bool {
	i := p.index(d)
	if i < 0 {
		return p.undeclaredNeedsInventory() // a device admitted by a DeviceCA
	}
	for _, pl := range p.rollouts {
		if pl.yes.has(i) {
			return false
		}
		if !pl.maybe.has(i) {
			continue
		}
		for _, s := range pl.selectors {
			if len(s.Inventory) > 0 {
				return true
			}
		}
	}
	return false
}

// index returns d's position among the fleet's declared devices, or -1
// when none declares it: by d.Declared when it is the fleet's own
// declaration of d.ID (no lookup), by name otherwise.
func (p *Plan) index(d *Device) int {
	if m := d.Declared; m != nil && p.unique && len(p.fleet.Devices) > 0 {
		ds := p.fleet.Devices
		off := uintptr(unsafe.Pointer(m)) - uintptr(unsafe.Pointer(&ds[0]))
		if i := off / unsafe.Sizeof(ds[0]); i < uintptr(len(ds)) && &ds[i] == m && m.Name == d.ID {
			return int(i)
		}
	}
	if x, ok := p.devices[d.ID]; ok {
		return int(x)
	}
	return -1
}

// route returns the rollout d follows, or nil.
func (p *Plan) route(d *Device) *plan {
	i := p.index(d)
	if i < 0 {
		return p.routeUndeclared(d)
	}
	for _, pl := range p.rollouts {
		if pl.targets(d, i) {
			return pl
		}
	}
	return nil
}

// Route names the generation d follows: the running generation of the
// highest-priority rollout that targets d. ok is false when none does;
// reason then says why (ReasonNotTargeted, ReasonNotRecorded).
func (p *Plan) Route(d *Device) (g store.GenerationRef, reason Reason, ok bool) {
	pl := p.route(d)
	switch {
	case pl == nil:
		return store.GenerationRef{}, ReasonNotTargeted, false
	case !pl.recorded:
		return store.GenerationRef{Rollout: pl.ro.Name}, ReasonNotRecorded, false
	}
	return pl.gen, "", true
}

// Next decides what d (in.Device) should install now. See the package doc
// for the rules; the Decision's Reason says which one decided.
func (p *Plan) Next(in NextInput) Decision {
	d := in.Device
	pl := p.route(d)
	if pl == nil {
		return Decision{Reason: ReasonNotTargeted}
	}
	dec := Decision{Generation: pl.gen, Artifact: pl.art.Name, ArtifactName: pl.artName}
	switch {
	case !pl.recorded:
		dec.Generation = store.GenerationRef{Rollout: pl.ro.Name}
		return dec.none(ReasonNotRecorded)
	case in.Generation != pl.gen:
		return dec.none(ReasonStale)
	}
	installed := d.Provides["artifact_name"] == pl.artName

	// An admitted device gets the same answer until it finishes.
	if dep := in.Deployment; dep != nil {
		dec.Phase, dec.PhaseName, dec.Deployment = dep.Phase, pl.phaseName(dep.Phase), *dep
		switch {
		case in.Progress.Aborted != "":
			return dec.none(ReasonAborted)
		case dep.State == store.StateSuccess:
			return dec.none(ReasonDone)
		case dep.State == store.StateFailure:
			return dec.none(ReasonFailed)
		case dep.State == store.StateTimeout:
			return dec.none(ReasonTimedOut)
		case pl.overdue(dep, in.Now):
			dec.TimedOut = true
			return dec.none(ReasonTimedOut)
		case in.ArtifactRefused != "":
			return dec.none(ReasonArtifactRefused)
		case installed:
			dec.Action, dec.Reason = Installed, ReasonInstalled
			dec.Limit = pl.limit(dep.Phase)
			return dec
		}
		dec.Action, dec.Reason = Resume, ReasonResume
		return dec
	}

	if in.Progress.Aborted != "" {
		return dec.none(ReasonAborted)
	}
	if in.ArtifactRefused != "" {
		return dec.none(ReasonArtifactRefused)
	}
	if !installed {
		if r := pl.compatible(p, d); r != "" {
			return dec.none(r)
		}
	}
	if pl.ro.Spec.Paused {
		return dec.none(ReasonPaused)
	}

	// Which phases are open.
	g := pl.gates(&in)
	dec.NewlyComplete = g.newly
	pos := Key(pl.ro.Name, d.ID)
	key := keyT{pos, d.ID}
	eligible, full := false, false
	present := -1 // devices present ahead of d (counted on first need)
	for j := 0; j <= g.open; j++ {
		if !pl.eligible(j, key) {
			if !pl.exact || in.LastSeen == nil || in.Admitted == nil || admittedIn(&in.Progress, j) >= pl.phases[j].limit {
				continue
			}
			// Offline devices ahead of d give up their places.
			if present < 0 {
				present = pl.presentAhead(key, pl.phases[g.open].cum, &in)
			}
			if int64(present) >= pl.phases[j].cum {
				continue
			}
		}
		eligible = true
		if admittedIn(&in.Progress, j) >= pl.phases[j].limit {
			full = true
			continue
		}
		if !installed && !pl.inWindow(in.Now) {
			dec.Until = pl.nextWindow(in.Now)
			return dec.none(ReasonWindow)
		}
		dec.Phase, dec.PhaseName, dec.Limit = j, pl.phases[j].name, pl.phases[j].limit
		if installed {
			dec.Action, dec.Reason = Installed, ReasonInstalled
		} else {
			dec.Action, dec.Reason = Admit, ReasonAdmit
		}
		return dec
	}
	// Not admitted: say why.
	later := false
	for j := g.open + 1; j < len(pl.phases); j++ {
		if pl.eligible(j, key) {
			later = true
			break
		}
	}
	switch {
	case installed:
		return dec.none(ReasonInstalled)
	case later:
		dec.Phase, dec.PhaseName, dec.Until = g.open+1, pl.phaseName(g.open+1), g.until
		return dec.none(g.why)
	case full || eligible:
		return dec.none(ReasonPhaseFull)
	}
	return dec.none(ReasonBeyondPhases)
}

// presentAhead counts the devices ranked before key that are present:
// admitted into the generation, or seen within the online window. It
// stops counting at stop (the cumulative size of the last open phase), so
// a poll costs at most stop plus the number of absent devices ahead.
func (pl *plan) presentAhead(key keyT, stop int64, in *NextInput) int {
	r, _ := slices.BinarySearchFunc(pl.keys, key, func(a, b keyT) int {
		switch {
		case a.less(b):
			return -1
		case b.less(a):
			return 1
		}
		return 0
	})
	n := 0
	for _, k := range pl.keys[:r] {
		if int64(n) >= stop {
			break
		}
		if in.Admitted(k.id) {
			n++
			continue
		}
		if seen := in.LastSeen(k.id); !seen.IsZero() && in.Now.Sub(seen) <= pl.online {
			n++
		}
	}
	return n
}

// overdue reports whether dep, not final, is past its deadline at now.
func (pl *plan) overdue(dep *store.Deployment, now time.Time) bool {
	if dep.Admitted.IsZero() || store.FinalState(dep.State) {
		return false
	}
	return !now.Before(pl.deadline(dep))
}

// deadline is when dep times out: its admission plus the device timeout
// once for the first attempt and once more for each retry.
func (pl *plan) deadline(dep *store.Deployment) time.Time {
	return dep.Admitted.Add(pl.timeout * time.Duration(1+dep.Attempts))
}

// Deadline returns when dep, a deployment in generation g, times out if it
// has not reached a final state: Admitted + deviceTimeout × (1 + Attempts).
// ok is false when g is not the running generation of a rollout of the
// plan, or dep has no admission time (a record from before it was kept) or
// is final. A caller sweeping the admitted devices of g reports
// store.StateTimeout for every one whose deadline has passed, then calls
// [Plan.OnStatus], so a device that vanished mid-update is counted even
// though it never polls again.
func (p *Plan) Deadline(g store.GenerationRef, dep store.Deployment) (t time.Time, ok bool) {
	pl := p.byName[g.Rollout]
	if pl == nil || !pl.recorded || pl.gen != g || dep.Admitted.IsZero() || store.FinalState(dep.State) {
		return time.Time{}, false
	}
	return pl.deadline(&dep), true
}

func (dec Decision) none(r Reason) Decision {
	dec.Action, dec.Reason = None, r
	return dec
}

func (pl *plan) phaseName(k int) string {
	if k >= 0 && k < len(pl.phases) {
		return pl.phases[k].name
	}
	return ""
}

func (pl *plan) limit(k int) int64 {
	if k >= 0 && k < len(pl.phases) {
		return pl.phases[k].limit
	}
	return 0
}

// eligible reports whether a device with key may join phase j: from its
// own phase on (exact targets), or when its position falls in the phase's
// share (open targets; count phases take anybody).
func (pl *plan) eligible(j int, key keyT) bool {
	ph := &pl.phases[j]
	switch {
	case ph.full, ph.count:
		return true
	case pl.exact:
		return key.less(ph.bound)
	}
	return key.h < ph.bound.h
}

func admittedIn(p *store.Progress, k int) int64 {
	if k < len(p.Phases) {
		return p.Phases[k].Admitted
	}
	return 0
}

func countsOf(p *store.Progress, k int) store.PhaseCounts {
	if k < len(p.Phases) {
		return p.Phases[k]
	}
	return store.PhaseCounts{}
}

// complete reports whether phase k's counts make it complete.
func (pl *plan) complete(c store.PhaseCounts, k int) bool {
	ph := &pl.phases[k]
	final := c.Succeeded + c.Failed + c.TimedOut
	switch {
	case ph.limit == 0 || final >= ph.limit:
		return true
	case pl.exact:
		return false
	}
	return c.Admitted > 0 && final >= c.Admitted
}

// settled reports whether phase k of a closed target is over although it
// is below its quota, because the devices of its remaining places never
// showed up: online tracking is on, every admission of the phase is final,
// and every device ranked into the phase's places (counted by rank over
// present devices: admitted, or seen within the online window) was
// admitted. Offline devices so never hold a phase open; one that shows up
// later is admitted into a phase that still has room. The first phase must
// have admitted someone: a rollout never completes with nobody updated.
func (pl *plan) settled(k int, c store.PhaseCounts, in *NextInput) bool {
	if !pl.exact || in.LastSeen == nil || in.Admitted == nil || (k == 0 && c.Admitted == 0) ||
		c.Succeeded+c.Failed+c.TimedOut < c.Admitted {
		return false
	}
	places, present := pl.phases[k].cum, int64(0)
	for _, key := range pl.keys {
		if present >= places {
			break
		}
		if in.Admitted(key.id) {
			present++
			continue
		}
		if seen := in.LastSeen(key.id); !seen.IsZero() && in.Now.Sub(seen) <= pl.online {
			return false // present, within the places, not admitted yet
		}
	}
	return true
}

// Settle returns the phases of in.Generation that the gates find complete
// now but are not recorded so (NextInput.Completed), as Decision's
// NewlyComplete: what a periodic check records when no polling device
// would (every present device has finished, the rest are offline).
// in.Device is not used.
func (p *Plan) Settle(in NextInput) uint64 {
	pl := p.byName[in.Generation.Rollout]
	if pl == nil || !pl.recorded || pl.gen != in.Generation || in.Progress.Aborted != "" || in.ArtifactRefused != "" {
		return 0
	}
	return pl.gates(&in).newly
}

// gateState is how far the gates let a generation go.
type gateState struct {
	open  int       // the last open phase; -1 when phase 0 waits for approval
	why   Reason    // what keeps phase open+1 closed (when there is one)
	until time.Time // for ReasonHold
	newly uint64    // NewlyComplete
}

func (pl *plan) gates(in *NextInput) gateState {
	g := gateState{open: -1}
	if !pl.approved[0] {
		g.why = ReasonApproval
		return g
	}
	for k := 0; ; k++ {
		g.open = k
		var at time.Time
		if k < len(in.Completed) {
			at = in.Completed[k]
		}
		done := !at.IsZero()
		if c := countsOf(&in.Progress, k); !done && (pl.complete(c, k) || pl.settled(k, c, in)) {
			done, at = true, in.Now
			g.newly |= 1 << k
		}
		if k == len(pl.phases)-1 {
			return g
		}
		if !done {
			g.why = ReasonWaitPhase
			return g
		}
		if end := at.Add(pl.phases[k].hold); in.Now.Before(end) {
			g.why, g.until = ReasonHold, end
			return g
		}
		if !pl.approved[k+1] {
			g.why = ReasonApproval
			return g
		}
	}
}

// compatible returns why d cannot install the artifact, or "".
func (pl *plan) compatible(p *Plan, d *Device) Reason {
	if !slices.Contains(pl.art.Spec.DeviceTypes, d.DeviceType) {
		return ReasonDeviceType
	}
	for k, v := range pl.art.Spec.Depends {
		have, ok := d.Provides[k]
		if k == "device_type" {
			have, ok = d.DeviceType, true
		}
		if !ok || have != v {
			return ReasonDepends
		}
	}
	if pl.ro.Spec.AllowDowngrade {
		return ""
	}
	if pl.art.Spec.Version != "" {
		if cur := p.artifactNamed(d.Provides["artifact_name"]); cur != nil && cur.Spec.Version != "" &&
			d.Provides["artifact_group"] == pl.artGroup {
			if c, ok := CompareVersions(pl.art.Spec.Version, cur.Spec.Version); ok && c < 0 {
				return ReasonDowngrade
			}
		}
	}
	for _, k := range pl.versionKeys {
		if have, ok := d.Provides[k]; ok {
			if c, ok := CompareVersions(pl.art.Spec.Provides[k], have); ok && c < 0 {
				return ReasonDowngrade
			}
		}
	}
	return ""
}

// artifactNamed returns the rollout artifact whose artifact_name is name.
// Only artifacts some rollout uses are indexed: those are the ones a
// device may run because of Gitfleet.
func (p *Plan) artifactNamed(name string) *schema.Artifact {
	if name == "" {
		return nil
	}
	for _, pl := range p.rollouts {
		if pl.artName == name {
			return pl.art
		}
	}
	return nil
}

// OnStatus decides whether the generation aborts after a status report or
// an alert, and whether the reporting device's phase just completed.
func (p *Plan) OnStatus(in StatusInput) StatusDecision {
	pl := p.byName[in.Generation.Rollout]
	if pl == nil || !pl.recorded || pl.gen != in.Generation || in.Phase < 0 || in.Phase >= len(pl.phases) {
		return StatusDecision{}
	}
	c := countsOf(&in.Progress, in.Phase)
	if in.Progress.Aborted != "" {
		return StatusDecision{}
	}
	out := pl.abortCheck(in, c)
	// A report that aborts by the phase's own counts (failures, timeouts)
	// does not complete it: it ended in an abort. An alert that aborts
	// leaves the counts' verdict alone.
	out.PhaseCompleted = (!out.Abort || out.Criterion == "alert") && pl.complete(c, in.Phase)
	return out
}

func (pl *plan) abortCheck(in StatusInput, c store.PhaseCounts) StatusDecision {
	var out StatusDecision
	ph := &pl.phases[in.Phase]
	a := &ph.abort
	if a.MaxFailures != nil && c.Failed > int64(*a.MaxFailures) {
		out.Abort, out.Criterion = true, "maxFailures"
		out.Reason = fmt.Sprintf("phase %q: %d device%s failed, more than maxFailures %d", ph.name, c.Failed, plural(c.Failed), *a.MaxFailures)
		return out
	}
	if a.MaxFailurePercent != nil {
		finished := c.Succeeded + c.Failed
		pct := *a.MaxFailurePercent
		if finished >= int64(max(a.MinSample, 1)) && float64(c.Failed)*100 > pct*float64(finished) {
			out.Abort, out.Criterion = true, "maxFailurePercent"
			out.Reason = fmt.Sprintf("phase %q: %d of %d finished devices failed (%s%%), more than maxFailurePercent %s%% (minSample %d)",
				ph.name, c.Failed, finished, fmtFloat(float64(c.Failed)*100/float64(finished)), fmtFloat(pct), a.MinSample)
			return out
		}
	}
	if a.MaxTimedOut != nil && c.TimedOut > int64(*a.MaxTimedOut) {
		out.Abort, out.Criterion = true, "maxTimedOut"
		out.Reason = fmt.Sprintf("phase %q: %d device%s timed out (no final state within the device timeout), more than maxTimedOut %d",
			ph.name, c.TimedOut, plural(c.TimedOut), *a.MaxTimedOut)
		return out
	}
	if a.MaxTimedOutPercent != nil {
		finished := c.Succeeded + c.Failed + c.TimedOut
		pct := *a.MaxTimedOutPercent
		if finished >= int64(max(a.MinSample, 1)) && float64(c.TimedOut)*100 > pct*float64(finished) {
			out.Abort, out.Criterion = true, "maxTimedOutPercent"
			out.Reason = fmt.Sprintf("phase %q: %d of %d finished devices timed out (%s%%), more than maxTimedOutPercent %s%% (minSample %d)",
				ph.name, c.TimedOut, finished, fmtFloat(float64(c.TimedOut)*100/float64(finished)), fmtFloat(pct), a.MinSample)
			return out
		}
	}
	for k := range pl.phases {
		if k != in.Phase && admittedIn(&in.Progress, k) == 0 {
			continue
		}
		for _, name := range pl.phases[k].abort.Alerts {
			if n := in.Alerts[name]; n > 0 {
				out.Abort, out.Criterion = true, "alert"
				out.Reason = fmt.Sprintf("alert %q raised on %d admitted device%s (abort criteria of phase %q)", name, n, plural(n), pl.phases[k].name)
				return out
			}
		}
	}
	return out
}

func plural(n int64) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func fmtFloat(f float64) string {
	s := fmt.Sprintf("%.2f", f)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// Rollout describes the rollout called name.
func (p *Plan) Rollout(name string) (Info, bool) {
	pl := p.byName[name]
	if pl == nil {
		return Info{}, false
	}
	return pl.info(), true
}

// Rollouts describes every rollout, highest priority first.
func (p *Plan) Rollouts() []Info {
	out := make([]Info, 0, len(p.rollouts))
	for _, pl := range p.rollouts {
		out = append(out, pl.info())
	}
	return out
}

func (pl *plan) info() Info {
	in := Info{Name: pl.ro.Name, Generation: pl.gen, Artifact: pl.art.Name, Priority: pl.ro.Spec.Priority, Exact: pl.exact, Size: pl.size}
	for _, ph := range pl.phases {
		in.Phases = append(in.Phases, PhaseInfo{Name: ph.name, Cumulative: ph.cum, Limit: ph.limit})
	}
	return in
}

// WatchedBy returns the recorded generations whose phases name check in
// their abort criteria (abort.alerts): those an alert of that check on one
// of their admitted devices may abort.
func (p *Plan) WatchedBy(check string) []store.GenerationRef {
	var out []store.GenerationRef
	for _, pl := range p.rollouts {
		if !pl.recorded {
			continue
		}
		for _, ph := range pl.phases {
			if slices.Contains(ph.abort.Alerts, check) {
				out = append(out, pl.gen)
				break
			}
		}
	}
	return out
}
