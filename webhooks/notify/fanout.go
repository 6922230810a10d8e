package notify

import (
	"context"
	"errors"
	"time"

	"github.com/gitfleet/gitfleet/schema"
)

// FilterOf is the filter a Notification manifest declares.
func FilterOf(spec schema.NotificationSpec) Filter {
	f := Filter{Rollouts: spec.Rollouts, Checks: spec.Checks}
	for _, e := range spec.Events {
		f.Events = append(f.Events, Kind(e))
	}
	return f
}

// Fanout is a [Sink] that hands every event to each of its sinks (one per
// Notification manifest, say); each applies its own filter and queue, so a
// slow destination never delays another.
type Fanout []Sink

var _ Sink = Fanout(nil)

// Notify gives e, with one ID and time for all, to every sink.
func (f Fanout) Notify(e Event) {
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	for _, s := range f {
		s.Notify(e)
	}
}

// Close closes every sink, all sharing ctx's deadline, and joins their
// errors.
func (f Fanout) Close(ctx context.Context) error {
	errs := make(chan error, len(f))
	for _, s := range f {
		go func() { errs <- s.Close(ctx) }()
	}
	var all []error
	for range f {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

// Stats sums the sinks' counters.
func (f Fanout) Stats() Stats {
	var t Stats
	for _, s := range f {
		st := s.Stats()
		t.Queued += st.Queued
		t.Dropped += st.Dropped
		t.Delivered += st.Delivered
		t.Failed += st.Failed
		t.Messages += st.Messages
	}
	return t
}
