package plan

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/gitfleet/gitfleet/policies"
	"github.com/gitfleet/gitfleet/schema"
)

// differ compares the manifests of two fleets.
type differ struct {
	base, head *schema.Fleet
	rb, rh     *resolver // resolve targets in base and in head

	// reach maps, in head, each device to the groups and rollouts that
	// reach it; built on the first accepted device.
	reach map[string][]string
}

func diff(base, head *schema.Fleet) []Change {
	d := &differ{base: base, head: head, rb: newResolver(base), rh: newResolver(head)}
	var out []Change
	out = append(out, diffKind(base.Rollouts, head.Rollouts, d.rollout)...)
	out = append(out, diffKind(base.Artifacts, head.Artifacts, d.artifact)...)
	out = append(out, summarizeLists(diffKind(base.Devices, head.Devices, d.device))...)
	out = append(out, diffKind(base.Groups, head.Groups, d.group)...)
	out = append(out, diffKind(base.Configs, head.Configs, d.config)...)
	out = append(out, diffKind(base.Checks, head.Checks, d.check)...)
	out = append(out, diffKind(base.Keys, head.Keys, d.key)...)
	out = append(out, diffKind(base.Notifications, head.Notifications, d.notification)...)
	out = append(out, diffKind(base.Operators, head.Operators, d.operator)...)
	return out
}

// diffKind pairs the manifests of one kind by name and calls fn for each
// pair; b or h is nil when the manifest is only in head or only in base.
// fn returns nil when nothing a reviewer cares about changed. Where two
// manifests share a name (a schema error), the first one counts.
func diffKind[T any, P interface {
	*T
	schema.Manifest
}](base, head []T, fn func(b, h P) *Change) []Change {
	index := func(s []T) map[string]P {
		m := make(map[string]P, len(s))
		for i := range s {
			p := P(&s[i])
			if _, dup := m[p.Metadata().Name]; !dup {
				m[p.Metadata().Name] = p
			}
		}
		return m
	}
	bs, hs := index(base), index(head)
	names := slices.Collect(maps.Keys(bs))
	for n := range hs {
		if _, ok := bs[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var out []Change
	for _, name := range names {
		b, h := bs[name], hs[name]
		c := fn(b, h)
		if c == nil {
			continue
		}
		m := schema.Manifest(h)
		if h == nil {
			m = b
		}
		meta := m.Metadata()
		c.Kind, c.Name = meta.Kind, name
		c.File, c.Line = meta.Source.File, meta.Source.Line
		out = append(out, *c)
	}
	return out
}

// same reports whether two manifests encode alike.
func same(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// manifestChanges describes the changed fields of a manifest, labels and
// spec, paths written from the spec ("values.log_level") or as
// "labels.name". Fields in skip (spec paths, or their prefixes) are left
// out: the caller words them itself.
func manifestChanges(b, h schema.Manifest, skip ...string) []string {
	return fieldChanges("", manifestFields(b, skip), manifestFields(h, skip))
}

// manifestFields flattens the labels and spec of m, except the spec
// paths in skip.
func manifestFields(m schema.Manifest, skip []string) map[string]leaf {
	out := make(map[string]leaf)
	for p, l := range leaves(m) {
		switch {
		case strings.HasPrefix(p, "metadata.labels"):
			out[strings.TrimPrefix(p, "metadata.")] = l
		case strings.HasPrefix(p, "spec."):
			p = strings.TrimPrefix(p, "spec.")
			if !slices.ContainsFunc(skip, func(s string) bool { return p == s || strings.HasPrefix(p, s+".") || strings.HasPrefix(p, s+"[") }) {
				out[p] = l
			}
		}
	}
	return out
}

// deviceDelta describes how the devices of a target changed, or "".
// Targets list devices sorted, so only a change of set shows.
func deviceDelta(b, h *Targets) string {
	return listChange("devices targeted", b.Devices, h.Devices)
}

// groupUsers lists the rollouts, configs and checks of f that target
// group, as "rollout a, config b".
func groupUsers(f *schema.Fleet, group string) string {
	var out []string
	for _, r := range f.Rollouts {
		if slices.Contains(r.Spec.Target.Groups, group) {
			out = append(out, "rollout "+r.Name)
		}
	}
	for _, c := range f.Configs {
		if slices.Contains(c.Spec.Target.Groups, group) {
			out = append(out, "config "+c.Name)
		}
	}
	for _, c := range f.Checks {
		if slices.Contains(c.Spec.Target.Groups, group) {
			out = append(out, "check "+c.Name)
		}
	}
	return strings.Join(out, ", ")
}

func (d *differ) rollout(b, h *schema.Rollout) *Change {
	c := new(Change)
	switch {
	case b == nil:
		t := d.rh.target(&h.Spec.Target)
		c.Targets = t
		for _, p := range h.Spec.Phases {
			c.Details = append(c.Details, fmt.Sprintf("phase %q: %s", p.Name, describePhase(h, &p)))
		}
		c.Details = append(c.Details, fieldList(manifestFields(h, []string{"artifact", "target", "phases", "paused", "approvedPhases"}))...)
		if h.Spec.Paused {
			c.Actions = []Action{Added, Paused}
			c.Summary = fmt.Sprintf("is added paused: it will deliver artifact %s to %s (%s) but admits nobody until spec.paused is removed",
				h.Spec.Artifact, t.Description, t.Count())
			return c
		}
		c.Actions = []Action{Started}
		c.Summary = fmt.Sprintf("starts: artifact %s to %s (%s)", h.Spec.Artifact, t.Description, t.Count())
		if len(h.Spec.Phases) > 0 {
			first := &h.Spec.Phases[0]
			c.Summary += fmt.Sprintf("; phase %q opens first, admitting %s", first.Name, size(first))
		}
		return c
	case h == nil:
		c.Targets = d.rb.target(&b.Spec.Target)
		c.Actions = []Action{Stopped}
		c.Summary = fmt.Sprintf("stops: nobody new is admitted; devices that installed artifact %s keep it", b.Spec.Artifact)
		return c
	}

	bt, ht := d.rb.target(&b.Spec.Target), d.rh.target(&h.Spec.Target)
	c.Targets = ht
	var says []string

	if b.Spec.Artifact != h.Spec.Artifact {
		c.Actions = append(c.Actions, NewGeneration)
		c.Details = append(c.Details, fmt.Sprintf("artifact: %s → %s", b.Spec.Artifact, h.Spec.Artifact))
		says = append(says, fmt.Sprintf("starts a new generation delivering artifact %s (was %s), from the first phase", h.Spec.Artifact, b.Spec.Artifact))
	} else if what := d.artifactBits(h.Spec.Artifact); what != "" {
		c.Actions = append(c.Actions, NewGeneration)
		c.Details = append(c.Details, fmt.Sprintf("artifact %s: new bits (%s)", h.Spec.Artifact, what))
		says = append(says, fmt.Sprintf("starts a new generation: artifact %s changed (%s), from the first phase", h.Spec.Artifact, what))
	}

	switch {
	case !b.Spec.Paused && h.Spec.Paused:
		c.Actions = append(c.Actions, Paused)
		says = append(says, "is paused: nobody new is admitted, devices already updating finish")
	case b.Spec.Paused && !h.Spec.Paused:
		c.Actions = append(c.Actions, Resumed)
		says = append(says, "resumes admitting devices")
	}

	var approved, withdrawn []string
	for _, name := range h.Spec.ApprovedPhases {
		if !slices.Contains(b.Spec.ApprovedPhases, name) {
			approved = append(approved, name)
			desc := "unknown phase"
			if p := h.Phase(name); p != nil {
				desc = size(p)
			}
			c.Details = append(c.Details, fmt.Sprintf("phase %q approved: admits %s once the phase before it completes its hold", name, desc))
		}
	}
	for _, name := range b.Spec.ApprovedPhases {
		if !slices.Contains(h.Spec.ApprovedPhases, name) {
			withdrawn = append(withdrawn, name)
			c.Details = append(c.Details, fmt.Sprintf("phase %q no longer approved: it waits for approval again if it has not opened yet", name))
		}
	}
	if len(approved) > 0 {
		c.Actions = append(c.Actions, Promoted)
		says = append(says, "is promoted: "+quoteList("phase", approved)+" approved")
	}
	if len(withdrawn) > 0 {
		c.Actions = append(c.Actions, Unapproved)
		says = append(says, "withdraws the approval of "+quoteList("phase", withdrawn))
	}

	changed := phaseChanges(b, h)
	changed = append(changed, manifestChanges(b, h, "artifact", "paused", "approvedPhases", "phases")...)
	if len(changed) > 0 {
		c.Actions = append(c.Actions, Changed)
		c.Details = append(c.Details, changed...)
		what := fmt.Sprintf("changes %d setting%s", len(changed), plural(len(changed)))
		if !slices.Contains(c.Actions, NewGeneration) {
			what += " of the running generation"
		}
		says = append(says, what)
	}
	if len(c.Actions) == 0 {
		// Devices joining or leaving through a group change are told
		// with the group and the devices.
		return nil
	}
	if delta := deviceDelta(bt, ht); delta != "" {
		c.Details = append(c.Details, delta)
	}
	c.Summary = strings.Join(says, "; ")
	return c
}

// artifactBits says what changed in the bits of the artifact called name
// between base and head ("sha256", "source"), or "" when nothing did or
// the artifact is new.
func (d *differ) artifactBits(name string) string {
	b, h := d.base.Artifact(name), d.head.Artifact(name)
	if b == nil || h == nil {
		return ""
	}
	var what []string
	if b.Spec.Source != h.Spec.Source {
		what = append(what, "source")
	}
	if b.Spec.SHA256 != h.Spec.SHA256 {
		what = append(what, "sha256")
	}
	if b.ArtifactName() != h.ArtifactName() {
		what = append(what, "artifactName")
	}
	return strings.Join(what, ", ")
}

// phaseChanges describes the changes of a rollout's phases, matched by
// name.
func phaseChanges(b, h *schema.Rollout) []string {
	var lines []string
	for _, p := range h.Spec.Phases {
		old := b.Phase(p.Name)
		if old == nil {
			lines = append(lines, fmt.Sprintf("phase %q added: %s", p.Name, describePhase(h, &p)))
			continue
		}
		lines = append(lines, fieldChanges(fmt.Sprintf("phase %q: ", p.Name), leaves(old), leaves(&p))...)
	}
	for _, p := range b.Spec.Phases {
		if h.Phase(p.Name) == nil {
			lines = append(lines, fmt.Sprintf("phase %q removed (was %s)", p.Name, describePhase(b, &p)))
		}
	}
	var bo, ho []string
	for _, p := range b.Spec.Phases {
		if h.Phase(p.Name) != nil {
			bo = append(bo, p.Name)
		}
	}
	for _, p := range h.Spec.Phases {
		if b.Phase(p.Name) != nil {
			ho = append(ho, p.Name)
		}
	}
	if !slices.Equal(bo, ho) {
		lines = append(lines, fmt.Sprintf("phase order: %s → %s", strings.Join(bo, ", "), strings.Join(ho, ", ")))
	}
	return lines
}

// size says how much of the target a phase admits: "5 %" or "10 devices".
func size(p *schema.Phase) string {
	if p.Count > 0 {
		return fmt.Sprintf("%d device%s", p.Count, plural(p.Count))
	}
	return strconv.FormatFloat(p.Percent, 'f', -1, 64) + " %"
}

// describePhase says what a phase of r does: its size, hold, approval gate
// and abort criteria.
func describePhase(r *schema.Rollout, p *schema.Phase) string {
	parts := []string{size(p)}
	if p.Hold.Duration > 0 {
		parts = append(parts, "hold "+p.Hold.String())
	}
	if p.RequiresApproval {
		if r.Approved(p.Name) {
			parts = append(parts, "approved")
		} else {
			parts = append(parts, "needs approval")
		}
	}
	parts = append(parts, abortWords(&p.Abort))
	return strings.Join(parts, ", ")
}

func abortWords(a *schema.AbortCriteria) string {
	if a.IsZero() {
		return "no abort criteria"
	}
	var parts []string
	switch {
	case a.MaxFailures == nil:
	case *a.MaxFailures == 0:
		parts = append(parts, "the first failure")
	default:
		parts = append(parts, fmt.Sprintf("more than %d failure%s", *a.MaxFailures, plural(*a.MaxFailures)))
	}
	if a.MaxFailurePercent != nil {
		s := strconv.FormatFloat(*a.MaxFailurePercent, 'f', -1, 64) + " % failed"
		if a.MinSample > 0 {
			s += fmt.Sprintf(" (of at least %d)", a.MinSample)
		}
		parts = append(parts, "more than "+s)
	}
	if len(a.Alerts) > 0 {
		parts = append(parts, listed("alert", a.Alerts))
	}
	return "aborts on " + strings.Join(parts, " or ")
}

func quoteList(noun string, names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return listed(noun, q)
}

func (d *differ) artifact(b, h *schema.Artifact) *Change {
	switch {
	case b == nil:
		s := fmt.Sprintf("is added: %s for %s", h.Spec.Source, listed("device type", h.Spec.DeviceTypes))
		if len(h.Spec.SignedBy) > 0 {
			s += ", signed by " + strings.Join(h.Spec.SignedBy, ", ")
		} else {
			s += ", unsigned"
		}
		return &Change{Actions: []Action{Added}, Summary: s}
	case h == nil:
		return &Change{Actions: []Action{Removed}, Summary: "is removed"}
	case same(b, h):
		return nil
	}
	c := &Change{Actions: []Action{Changed}, Details: manifestChanges(b, h)}
	c.Summary = "changes"
	if d.artifactBits(h.Name) != "" {
		var rs []string
		for _, r := range d.head.Rollouts {
			if r.Spec.Artifact == h.Name {
				rs = append(rs, r.Name)
			}
		}
		switch len(rs) {
		case 0:
		case 1:
			c.Summary += fmt.Sprintf(": new bits, so rollout %s starts a new generation", rs[0])
		default:
			c.Summary += fmt.Sprintf(": new bits, so rollouts %s start new generations", strings.Join(rs, ", "))
		}
	}
	return c
}

func (d *differ) device(b, h *schema.Device) *Change {
	switch {
	case b == nil:
		c := &Change{Actions: []Action{Accepted}, Summary: "is accepted: " + describeDevice(h)}
		c.Details = d.reaching(h.Name)
		return c
	case h == nil:
		return &Change{Actions: []Action{Removed}, Summary: "is removed: it is refused at its next authentication and gets no more updates"}
	case same(b, h):
		return nil
	}
	c := &Change{Actions: []Action{Changed}, Summary: "changes how it is recognized: " + describeDevice(h)}
	c.Details = manifestChanges(b, h)
	return c
}

// maxListChanges is how many changes of one kind (accepted, removed,
// changed) a device-list file may have and still be listed device by
// device; past it, the plan says how many and names the first few.
const maxListChanges = 5

// summarizeLists replaces, for each device-list file and action with more
// than maxListChanges device changes, those changes with one that counts
// them and names the first few, at the place of the first. A list of a
// million devices then makes a plan of a few lines.
func summarizeLists(cs []Change) []Change {
	type group struct {
		file   string
		action Action
	}
	members := map[group][]int{}
	for i, c := range cs {
		if strings.HasSuffix(c.File, schema.DeviceListExt) {
			g := group{c.File, c.Actions[0]}
			members[g] = append(members[g], i)
		}
	}
	summary := map[int]*Change{} // by the index of the first change it replaces
	drop := map[int]bool{}
	for g, idx := range members {
		if len(idx) <= maxListChanges {
			continue
		}
		names := make([]string, len(idx))
		for i, j := range idx {
			names[i], drop[j] = cs[j].Name, true
		}
		what := map[Action]string{
			Accepted: "accepted",
			Removed:  "removed: refused at their next authentication, no more updates",
			Changed:  "change how they are recognized",
		}[g.action]
		if what == "" {
			what = string(g.action)
		}
		shown := names[:maxListChanges]
		summary[idx[0]] = &Change{
			Kind: schema.KindDevice, Name: g.file, Actions: []Action{g.action}, Count: len(idx),
			Summary: fmt.Sprintf("(device list): %d devices %s", len(idx), what),
			Details: []string{strings.Join(shown, ", ") + fmt.Sprintf(" and %d more", len(idx)-len(shown))},
			File:    g.file,
		}
	}
	if len(drop) == 0 {
		return cs
	}
	out := make([]Change, 0, len(cs)-len(drop)+len(summary))
	for i := range cs {
		if s := summary[i]; s != nil {
			out = append(out, *s)
		}
		if !drop[i] {
			out = append(out, cs[i])
		}
	}
	return out
}

// describeDevice says how a device is recognized.
func describeDevice(d *schema.Device) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(d.Spec.Identity)) {
		parts = append(parts, k+"="+d.Spec.Identity[k])
	}
	if k := d.Spec.PublicKeySHA256; k != "" {
		parts = append(parts, "key sha256 "+k[:min(len(k), 16)]+"…")
	}
	if d.Spec.DeviceType != "" {
		parts = append(parts, "device type "+d.Spec.DeviceType)
	}
	return strings.Join(parts, ", ")
}

// reaching lists, for a newly declared device, the head's groups it is a
// static or selected member of and the rollouts that target it.
func (d *differ) reaching(device string) []string {
	if d.reach == nil {
		d.reach = make(map[string][]string)
		groups := make(map[string][]string)
		for _, g := range d.head.Groups {
			for _, dev := range d.rh.target(&schema.Target{Groups: []string{g.Name}}).Devices {
				groups[dev] = append(groups[dev], g.Name)
			}
		}
		for dev, gs := range groups {
			d.reach[dev] = append(d.reach[dev], "member of "+listed("group", gs))
		}
		for _, r := range d.head.Rollouts {
			for _, dev := range d.rh.target(&r.Spec.Target).Devices {
				d.reach[dev] = append(d.reach[dev], fmt.Sprintf("targeted by rollout %s (artifact %s)", r.Name, r.Spec.Artifact))
			}
		}
	}
	return d.reach[device]
}

func (d *differ) group(b, h *schema.DeviceGroup) *Change {
	self := func(r *resolver, name string) *Targets { return r.target(&schema.Target{Groups: []string{name}}) }
	switch {
	case b == nil:
		t := self(d.rh, h.Name)
		c := &Change{Actions: []Action{Added}, Targets: t, Summary: "is added: " + t.Count()}
		if u := groupUsers(d.head, h.Name); u != "" {
			c.Summary += "; used by " + u
		}
		c.Details = fieldList(manifestFields(h, nil))
		return c
	case h == nil:
		c := &Change{Actions: []Action{Removed}, Targets: self(d.rb, b.Name), Summary: "is removed"}
		return c
	case same(b, h):
		return nil
	}
	bt, ht := self(d.rb, b.Name), self(d.rh, h.Name)
	c := &Change{Actions: []Action{Changed}, Targets: ht, Details: manifestChanges(b, h)}
	c.Summary = fmt.Sprintf("changes: %s (was %d)", ht.Count(), len(bt.Devices))
	if delta := deviceDelta(bt, ht); delta != "" {
		c.Details = append(c.Details, delta)
	}
	if u := groupUsers(d.head, h.Name); u != "" {
		c.Summary += "; affects " + u
	}
	return c
}

// config describes a DeviceConfig change. Secrets show by key and source
// only ("secrets: wifi-pass (file), api-key (age, changed)"): never the
// ciphertext, which is long and says nothing to a reviewer, though a new
// one means a new value.
func (d *differ) config(b, h *schema.DeviceConfig) *Change {
	switch {
	case b == nil:
		t := d.rh.target(&h.Spec.Target)
		sets := strings.Join(slices.Sorted(maps.Keys(h.Spec.Values)), ", ")
		if len(h.Spec.Secrets) > 0 {
			if sets != "" {
				sets += " and "
			}
			sets += "secrets " + strings.Join(secretChanges(nil, h.Spec.Secrets), ", ")
		}
		return &Change{Actions: []Action{Added}, Targets: t,
			Summary: fmt.Sprintf("is added: sets %s on %s (%s)", sets, t.Description, t.Count())}
	case h == nil:
		t := d.rb.target(&b.Spec.Target)
		return &Change{Actions: []Action{Removed}, Targets: t,
			Summary: fmt.Sprintf("is removed: its values no longer apply to %s (%s); less specific configs apply where they set the same keys", t.Description, t.Count())}
	case same(b, h):
		return nil
	}
	bt, ht := d.rb.target(&b.Spec.Target), d.rh.target(&h.Spec.Target)
	c := &Change{Actions: []Action{Changed}, Targets: ht, Details: manifestChanges(b, h, "secrets")}
	if parts := secretChanges(b.Spec.Secrets, h.Spec.Secrets); len(parts) > 0 {
		c.Details = append(c.Details, "secrets: "+strings.Join(parts, ", "))
	}
	if delta := deviceDelta(bt, ht); delta != "" {
		c.Details = append(c.Details, delta)
	}
	c.Summary = fmt.Sprintf("changes configuration of %s (%s)", ht.Description, ht.Count())
	return c
}

// secretChanges describes the secrets of a DeviceConfig at head (all of
// them when base is nil) or how they changed since base, one by key with
// its source: "api-key (age, changed)", "wifi-pass (file)".
func secretChanges(base, head schema.Secrets) []string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(head)) {
		hs := head[k]
		switch bs, ok := base[k]; {
		case base == nil:
			parts = append(parts, fmt.Sprintf("%s (%s)", k, hs.Source()))
		case !ok:
			parts = append(parts, fmt.Sprintf("%s (%s, added)", k, hs.Source()))
		case bs.Source() != hs.Source():
			parts = append(parts, fmt.Sprintf("%s (%s → %s)", k, bs.Source(), hs.Source()))
		case !bs.Equal(hs) && hs.File != "":
			parts = append(parts, fmt.Sprintf("%s (file %s → %s)", k, bs.File, hs.File))
		case !bs.Equal(hs):
			parts = append(parts, fmt.Sprintf("%s (age, changed)", k)) // another ciphertext: another value
		}
	}
	for _, k := range slices.Sorted(maps.Keys(base)) {
		if _, ok := head[k]; !ok {
			parts = append(parts, fmt.Sprintf("%s (%s, removed)", k, base[k].Source()))
		}
	}
	return parts
}

func (d *differ) check(b, h *schema.MonitorCheck) *Change {
	watch := func(r *resolver, c *schema.MonitorCheck) (*Targets, string) {
		t := r.target(&c.Spec.Target)
		if c.Spec.Target.IsZero() {
			t = r.target(&schema.Target{All: true})
		}
		probe, _ := c.Spec.Probe()
		sev := c.Spec.Severity
		if sev == "" {
			sev = schema.SeverityWarning
		}
		return t, fmt.Sprintf("watches %s on %s (%s), alert severity %s", probe, t.Description, t.Count(), sev)
	}
	switch {
	case b == nil:
		t, s := watch(d.rh, h)
		c := &Change{Actions: []Action{Added}, Targets: t, Summary: "is added: " + s}
		if rs := alertUsers(d.head, h.Name); rs != "" {
			c.Summary += "; its alerts abort " + rs
		}
		return c
	case h == nil:
		t, _ := watch(d.rb, b)
		return &Change{Actions: []Action{Removed}, Targets: t, Summary: fmt.Sprintf("is removed: devices of %s (%s) stop watching it", t.Description, t.Count())}
	case same(b, h):
		return nil
	}
	bt, _ := watch(d.rb, b)
	t, s := watch(d.rh, h)
	c := &Change{Actions: []Action{Changed}, Targets: t, Summary: "changes: " + s, Details: manifestChanges(b, h)}
	if delta := deviceDelta(bt, t); delta != "" {
		c.Details = append(c.Details, delta)
	}
	if rs := alertUsers(d.head, h.Name); rs != "" {
		c.Summary += "; its alerts abort " + rs
	}
	return c
}

// alertUsers lists the rollouts of f whose abort criteria name check.
func alertUsers(f *schema.Fleet, check string) string {
	var out []string
	for _, r := range f.Rollouts {
		for _, p := range r.Spec.Phases {
			if slices.Contains(p.Abort.Alerts, check) {
				out = append(out, r.Name)
				break
			}
		}
	}
	if len(out) == 0 {
		return ""
	}
	return listed("rollout", out)
}

func (d *differ) key(b, h *schema.SigningKey) *Change {
	env := func(k *schema.SigningKey) string {
		if k.Spec.Environment == "" {
			return "every environment"
		}
		return k.Spec.Environment
	}
	signs := func(f *schema.Fleet, key string) string {
		var as []string
		for _, a := range f.Artifacts {
			if slices.Contains(a.Spec.SignedBy, key) {
				as = append(as, a.Name)
			}
		}
		if len(as) == 0 {
			return ""
		}
		return "; checks " + listed("artifact", as)
	}
	switch {
	case b == nil:
		return &Change{Actions: []Action{Added}, Summary: fmt.Sprintf("is added: trusted to sign artifacts for %s (%s)%s", env(h), h.Spec.Algorithm, signs(d.head, h.Name))}
	case h == nil:
		return &Change{Actions: []Action{Removed}, Summary: "is removed: artifacts signed only by it are no longer trusted"}
	case same(b, h):
		return nil
	}
	return &Change{Actions: []Action{Changed}, Summary: fmt.Sprintf("changes: trusted for %s%s", env(h), signs(d.head, h.Name)),
		Details: manifestChanges(b, h)}
}

func (d *differ) notification(b, h *schema.Notification) *Change {
	dest := func(n *schema.Notification) string {
		events := "every event"
		if len(n.Spec.Events) > 0 {
			events = strings.Join(n.Spec.Events, ", ")
		}
		to := "nowhere"
		switch {
		case n.Spec.Webhook != nil:
			to = "webhook " + n.Spec.Webhook.URL
		case n.Spec.Email != nil:
			to = "e-mail to " + strings.Join(n.Spec.Email.To, ", ")
		}
		return events + " to " + to
	}
	switch {
	case b == nil:
		return &Change{Actions: []Action{Added}, Summary: "is added: sends " + dest(h)}
	case h == nil:
		return &Change{Actions: []Action{Removed}, Summary: "is removed: stops sending " + dest(b)}
	case same(b, h):
		return nil
	}
	return &Change{Actions: []Action{Changed}, Summary: "changes: sends " + dest(h), Details: manifestChanges(b, h)}
}

// policyChanges describes how the policies a fleet selects changed: packs
// selected, dropped or given another severity, and policy files added,
// removed or edited.
func policyChanges(b, h policies.Selection) []Change {
	var out []Change
	sev := func(s policies.Severity) string {
		switch s {
		case policies.Warn:
			return "all as warnings"
		case policies.Deny:
			return "all as denials"
		}
		return "each at its own severity"
	}
	for _, name := range slices.Sorted(maps.Keys(h.Packs)) {
		hs := h.Packs[name]
		bs, ok := b.Packs[name]
		switch {
		case !ok:
			out = append(out, Change{Kind: KindPolicy, Name: "pack " + name, Actions: []Action{Added}, File: policies.ConfigFile,
				Summary: "is selected: its policies now apply, " + sev(hs)})
		case bs != hs:
			out = append(out, Change{Kind: KindPolicy, Name: "pack " + name, Actions: []Action{Changed}, File: policies.ConfigFile,
				Summary: fmt.Sprintf("changes: its policies now apply %s (was %s)", sev(hs), sev(bs))})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(b.Packs)) {
		if _, ok := h.Packs[name]; !ok {
			out = append(out, Change{Kind: KindPolicy, Name: "pack " + name, Actions: []Action{Removed}, File: policies.ConfigFile,
				Summary: "is no longer selected: its policies stop applying"})
		}
	}
	for _, file := range slices.Sorted(maps.Keys(h.Files)) {
		sum, ok := b.Files[file]
		switch {
		case !ok:
			out = append(out, Change{Kind: KindPolicy, Name: file, Actions: []Action{Added}, File: file,
				Summary: "is added: its policies now apply"})
		case sum != h.Files[file]:
			out = append(out, Change{Kind: KindPolicy, Name: file, Actions: []Action{Changed}, File: file,
				Summary: "changes: read the diff of this file"})
		}
	}
	for _, file := range slices.Sorted(maps.Keys(b.Files)) {
		if _, ok := h.Files[file]; !ok {
			out = append(out, Change{Kind: KindPolicy, Name: file, Actions: []Action{Removed}, File: file,
				Summary: "is removed: its policies stop applying"})
		}
	}
	return out
}

// operator describes an Operator's change: who may open remote sessions
// to what, with which permissions, until when.
func (d *differ) operator(b, h *schema.Operator) *Change {
	access := func(o *schema.Operator) string {
		var parts []string
		for _, e := range o.Spec.Access {
			var who []string
			if len(e.Groups) > 0 {
				who = append(who, listed("group", e.Groups))
			}
			if len(e.Devices) > 0 {
				who = append(who, listed("device", e.Devices))
			}
			may := []string{"terminal"}
			if e.FileTransfer {
				may = append(may, "file transfer")
			}
			if e.PortForward {
				may = append(may, "port forward")
			}
			if e.RecordInput {
				may = append(may, "input recorded")
			}
			parts = append(parts, strings.Join(who, " and ")+" ("+strings.Join(may, ", ")+")")
		}
		s := strings.Join(parts, "; ")
		if e := o.Spec.Expires; e != "" {
			s += ", until " + e
		}
		return s
	}
	switch {
	case b == nil:
		return &Change{Actions: []Action{Added}, Summary: "is added: may open remote sessions to " + access(h)}
	case h == nil:
		return &Change{Actions: []Action{Removed}, Summary: "is removed: their open remote sessions end and their session tokens stop working"}
	case same(b, h):
		return nil
	}
	sum := "changes: may open remote sessions to " + access(h)
	if b.Spec.TokenSHA256 != h.Spec.TokenSHA256 || b.Spec.SSHPublicKey != h.Spec.SSHPublicKey {
		sum += "; a credential changes, so their session tokens stop working"
	}
	return &Change{Actions: []Action{Changed}, Summary: sum, Details: manifestChanges(b, h)}
}
