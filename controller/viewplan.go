package controller

import (
	"bytes"
	"slices"
	"sync"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/rollout"
	"github.com/gitfleet/gitfleet/controller/store"
)

// viewPlan is the rollout plan the management views (rollouts, audit,
// the dashboard) decide with: compiled once per live Snapshot and set of
// rollout records, from the previous one (rollout.CompileFrom), instead
// of from scratch for every request — at a million devices a compile
// from scratch costs seconds of CPU, a refresh of the dashboard's
// overview every two seconds would spend it again and again.
type viewPlan struct {
	mu   sync.Mutex
	snap *reconcile.Snapshot
	ros  []store.RolloutRecord
	plan *rollout.Plan
}

// planOf returns the plan of snap with the rollout records ros (nil when
// no commit is served).
func (c *Controller) planOf(snap *reconcile.Snapshot, ros []store.RolloutRecord) *rollout.Plan {
	if snap == nil || snap.Fleet == nil {
		return nil
	}
	v := &c.views
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.plan != nil && v.snap == snap && slices.EqualFunc(v.ros, ros, sameRecord) {
		return v.plan
	}
	v.plan = rollout.CompileFrom(v.plan, snap.Fleet, ros)
	v.snap, v.ros = snap, slices.Clone(ros)
	return v.plan
}

func sameRecord(a, b store.RolloutRecord) bool {
	return a.Name == b.Name && a.Artifact == b.Artifact && bytes.Equal(a.Settings, b.Settings) &&
		a.Generation == b.Generation && a.StartCommit == b.StartCommit && a.Started.Equal(b.Started) &&
		a.Commit == b.Commit && a.Updated.Equal(b.Updated) && a.Stopped == b.Stopped
}
