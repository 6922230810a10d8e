package rollout

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/tools/txtar"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

var update = flag.Bool("update", false, "rewrite the want files of testdata/*.txtar")

// TestGolden runs every testdata/*.txtar case: the fleet repository (every
// file but script and want), a script of polls, reports and commits run
// through the harness (the fake store carries out every decision), and
// want, the decisions. Script lines:
//
//	now 2026-03-02T10:00:00Z      set the clock
//	advance 30m                   move it
//	poll DEV [k=v …]              deployments/next; k=v sets what the device says from now on:
//	                              type=… (device type), inv:k=v (inventory), prov:k=v (provides,
//	                              artifact_name=… is short for prov:artifact_name=…)
//	report DEV STATE              a status report (the device then runs the artifact after success)
//	alert DEV CHECK=N …           alerts raised on the rollout's devices, then OnStatus
//	approve ROLLOUT PHASE         a commit adding PHASE to approvedPhases
//	set ROLLOUT paused=true|false a commit pausing or resuming
//	progress ROLLOUT              print the store's counts
//	seen DEV …                    the devices are seen now (as by an inventory update); polls count too.
//	                              The first seen or poll line turns on online tracking (LastSeen/Admitted)
//	refuse ROLLOUT WHY…           the controller refuses the rollout's artifact from now on
//	accept ROLLOUT                … and no longer does
//	sweep ROLLOUT                 report a timeout for every admitted device past its deadline
func TestGolden(t *testing.T) {
	paths, err := filepath.Glob("testdata/*.txtar")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(path)
			if err != nil {
				t.Fatal(err)
			}
			repo := fstest.MapFS{}
			var script []byte
			for _, f := range ar.Files {
				switch f.Name {
				case "script":
					script = f.Data
				case "want":
				default:
					repo[f.Name] = &fstest.MapFile{Data: f.Data}
				}
			}
			fleet, err := schema.Load(repo)
			if err != nil {
				var errs schema.Errors
				if errors.As(err, &errs) {
					for _, e := range errs {
						t.Error(e)
					}
				}
				t.Fatal(err)
			}
			got := runScript(t, fleet, string(script))
			i := slices.IndexFunc(ar.Files, func(f txtar.File) bool { return f.Name == "want" })
			if *update {
				if i < 0 {
					ar.Files = append(ar.Files, txtar.File{Name: "want"})
					i = len(ar.Files) - 1
				}
				ar.Files[i].Data = got
				if err := os.WriteFile(path, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if i < 0 {
				t.Fatal("no want file; run with -update")
			}
			if want := ar.Files[i].Data; !bytes.Equal(got, want) {
				t.Errorf("decisions differ (run with -update and review the diff):\n--- got\n%s\n--- want\n%s", got, want)
			}
		})
	}
}

func runScript(t *testing.T, fleet *schema.Fleet, script string) []byte {
	var out bytes.Buffer
	h := newHarness(t, fleet, t0)
	h.trackSeen = strings.Contains(script, "\nseen ") || strings.HasPrefix(script, "seen ")
	devices := map[string]*Device{}
	dev := func(id string) *Device {
		if d := devices[id]; d != nil {
			return d
		}
		d := &Device{ID: id, Identity: map[string]string{}, Inventory: map[string]string{}, Provides: map[string]string{"artifact_name": "factory"}}
		if decl := fleet.Device(id); decl != nil {
			for k, v := range decl.Spec.Identity {
				d.Identity[k] = v
			}
			d.DeviceType = decl.Spec.DeviceType
			d.Inventory["device_type"] = d.DeviceType
		}
		devices[id] = d
		return d
	}
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		fail := func(format string, args ...any) {
			t.Fatalf("script line %d %q: %s", n+1, line, fmt.Sprintf(format, args...))
		}
		need := func(k int) {
			if len(f) < k {
				fail("want %d fields", k)
			}
		}
		stamp := h.now.UTC().Format("Mon 15:04")
		switch f[0] {
		case "now":
			need(2)
			tm, err := time.Parse(time.RFC3339, f[1])
			if err != nil {
				fail("%v", err)
			}
			h.now = tm
			continue
		case "advance":
			need(2)
			d, err := schema.ParseDuration(f[1])
			if err != nil {
				fail("%v", err)
			}
			h.now = h.now.Add(d)
			continue
		case "poll":
			need(2)
			d := dev(f[1])
			for _, kv := range f[2:] {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					fail("want k=v, got %q", kv)
				}
				switch {
				case k == "type":
					d.DeviceType, d.Inventory["device_type"] = v, v
				case k == "artifact_name":
					d.Provides[k] = v
				case strings.HasPrefix(k, "inv:"):
					d.Inventory[k[4:]] = v
				case strings.HasPrefix(k, "prov:"):
					d.Provides[k[5:]] = v
				default:
					fail("unknown attribute %q", k)
				}
			}
			dec, _ := h.poll(d)
			fmt.Fprintf(&out, "%s poll %s: %s\n", stamp, d.ID, dec)
		case "report":
			need(3)
			d := dev(f[1])
			g, _, ok := h.plan.Route(d)
			if !ok {
				fail("device follows no rollout")
			}
			dep, sd := h.report(d, g, f[2])
			if dep.State == store.StateSuccess {
				d.Provides["artifact_name"] = h.plan.byName[g.Rollout].artName
			}
			fmt.Fprintf(&out, "%s report %s %s: %s (phase %d, attempts %d)%s\n", stamp, d.ID, f[2], dep.State, dep.Phase, dep.Attempts, statusText(sd))
		case "alert":
			need(3)
			d := dev(f[1])
			g, _, ok := h.plan.Route(d)
			if !ok {
				fail("device follows no rollout")
			}
			alerts := map[string]int64{}
			for _, kv := range f[2:] {
				k, v, _ := strings.Cut(kv, "=")
				var c int64
				fmt.Sscan(v, &c)
				alerts[k] = c
			}
			sd := h.alert(d, g, alerts)
			fmt.Fprintf(&out, "%s alert %s %s:%s\n", stamp, d.ID, strings.Join(f[2:], " "), statusText(sd))
		case "approve":
			need(3)
			ro := fleet.Rollout(f[1])
			ro.Spec.ApprovedPhases = append(ro.Spec.ApprovedPhases, f[2])
			h.recompile()
			fmt.Fprintf(&out, "%s commit: approve %s phase %s\n", stamp, f[1], f[2])
		case "set":
			need(3)
			ro := fleet.Rollout(f[1])
			switch f[2] {
			case "paused=true":
				ro.Spec.Paused = true
			case "paused=false":
				ro.Spec.Paused = false
			default:
				fail("unknown setting")
			}
			h.recompile()
			fmt.Fprintf(&out, "%s commit: %s %s\n", stamp, f[1], f[2])
		case "seen":
			need(2)
			for _, id := range f[1:] {
				h.seen[id] = h.now
			}
			fmt.Fprintf(&out, "%s seen %s\n", stamp, strings.Join(f[1:], " "))
		case "refuse":
			need(3)
			h.refused[f[1]] = strings.Join(f[2:], " ")
			fmt.Fprintf(&out, "%s artifact of %s refused: %s\n", stamp, f[1], h.refused[f[1]])
		case "accept":
			need(2)
			delete(h.refused, f[1])
			fmt.Fprintf(&out, "%s artifact of %s accepted\n", stamp, f[1])
		case "sweep":
			need(2)
			in, ok := h.plan.Rollout(f[1])
			if !ok {
				fail("no rollout")
			}
			ids, sds := h.sweep(in.Generation)
			fmt.Fprintf(&out, "%s sweep %s:", stamp, f[1])
			if len(ids) == 0 {
				out.WriteString(" nothing overdue")
			}
			for i, id := range ids {
				fmt.Fprintf(&out, " %s timeout%s;", id, statusText(sds[i]))
			}
			out.WriteString("\n")
		case "settle":
			need(2)
			in, ok := h.plan.Rollout(f[1])
			if !ok {
				fail("no rollout")
			}
			fmt.Fprintf(&out, "%s settle %s: phases over %s\n", stamp, f[1], h.settle(in.Generation))
		case "progress":
			need(2)
			in, ok := h.plan.Rollout(f[1])
			if !ok {
				fail("no rollout")
			}
			fg := h.st.gen(in.Generation)
			fmt.Fprintf(&out, "%s progress %s (target %d, exact %v):", stamp, f[1], in.Size, in.Exact)
			for k, ph := range in.Phases {
				c := fg.counts[k]
				fmt.Fprintf(&out, " %s %d/%d admitted %d ok %d failed", ph.Name, c.Admitted, ph.Limit, c.Succeeded, c.Failed)
				if c.TimedOut > 0 {
					fmt.Fprintf(&out, " %d timed out", c.TimedOut)
				}
				if k < len(fg.completed) && !fg.completed[k].IsZero() {
					fmt.Fprintf(&out, " (complete %s)", fg.completed[k].UTC().Format("15:04"))
				}
				if k < len(in.Phases)-1 {
					out.WriteString(";")
				}
			}
			if fg.aborted != "" {
				fmt.Fprintf(&out, "; aborted")
			}
			out.WriteString("\n")
		default:
			fail("unknown command")
		}
	}
	return out.Bytes()
}

func statusText(sd StatusDecision) string {
	var s string
	if sd.PhaseCompleted {
		s += " phase-completed"
	}
	if sd.Abort {
		s += " ABORT " + sd.Criterion + ": " + sd.Reason
	}
	return s
}
