package controller

import (
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// TestViewPlanCompiledOncePerSnapshot: the management views share one
// plan while the live Snapshot and the rollout records stay the same,
// and get a new one when either changes.
func TestViewPlanCompiledOncePerSnapshot(t *testing.T) {
	c := &Controller{}
	if c.planOf(nil, nil) != nil {
		t.Fatal("a plan without a served commit")
	}
	snap := &reconcile.Snapshot{Fleet: &schema.Fleet{}}
	ros := []store.RolloutRecord{{Name: "app", Artifact: "a@1", Generation: 1, Started: time.Unix(1, 0)}}
	p1 := c.planOf(snap, ros)
	if p1 == nil || c.planOf(snap, append([]store.RolloutRecord(nil), ros...)) != p1 {
		t.Fatal("the same Snapshot and records compiled again")
	}
	next := append([]store.RolloutRecord(nil), ros...)
	next[0].Generation = 2
	if c.planOf(snap, next) == p1 {
		t.Fatal("new rollout records reused the old plan")
	}
	if p3 := c.planOf(&reconcile.Snapshot{Fleet: &schema.Fleet{}}, next); p3 == p1 || p3 == nil {
		t.Fatal("a new Snapshot reused the old plan")
	}
}
