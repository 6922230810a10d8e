package notifier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/gitfleet/gitfleet/webhooks/notify"
	"github.com/gitfleet/gitfleet/webhooks/status"
)

// EventLog returns inner with notifications: an event AppendEvent records
// for the first time (added true: on one replica only) is also given to n
// (see LogEvent), so each event is notified once across replicas. Events
// and RecentEvents are inner's. A nil n notifies nothing.
func EventLog(inner store.EventLog, n *Notifier) store.EventLog {
	return &eventLog{EventLog: inner, n: n}
}

type eventLog struct {
	store.EventLog
	n *Notifier
}

// AppendEvent appends e to the inner log and notifies it when it is new.
func (l *eventLog) AppendEvent(ctx context.Context, e store.Event) (string, bool, error) {
	id, added, err := l.EventLog.AppendEvent(ctx, e)
	if err != nil || !added || l.n == nil {
		return id, added, err
	}
	if ev, ok := LogEvent(e, id); ok {
		if ev.Rollout != "" && ev.Kind != notify.RolloutStopped && l.n.wantsRolloutFacts() {
			addRolloutFacts(ctx, l.EventLog, &ev)
		}
		l.n.Notify(ctx, ev)
	} else {
		l.n.metrics.ignore(e.Kind)
		l.n.log.Warn("event kind is not in the schema's #Event list; recorded but not notified",
			"event", e.Kind, "subject", e.Subject)
	}
	return id, added, err
}

// maxMessage bounds the message an event carries in its details (a
// refused commit's message lists its errors).
const maxMessage = 8 << 10

// genSubject is the subject of a generation's or a phase's event:
// "canary/g3" or "canary/g3/phase1".
var genSubject = regexp.MustCompile(`^(.+)/g([0-9]+)(?:/phase([0-9]+))?$`)

// LogEvent turns an event of the log, recorded with ID id, into a
// notification. ok is false when e's kind is not one of schema.Events().
//
// The subject becomes the rollout of rollout.* and artifact.refused events ("canary",
// "rollout/canary", or "canary/g3" and "canary/g3/phase1", which also give
// the generation and phase details) and the device of device.* and
// session.* events; the message and author go to the details. The notification's ID is derived
// from id and e's commit, kind and subject, so it is the same on every
// retry and differs from any other event's.
func LogEvent(e store.Event, id string) (ev notify.Event, ok bool) {
	if !schema.IsEvent(e.Kind) {
		return notify.Event{}, false
	}
	ev = notify.Event{Kind: notify.Kind(e.Kind), Time: e.Time, Commit: e.Commit, ID: logEventID(e, id)}
	details := map[string]string{}
	switch kind, subject := e.Kind, e.Subject; {
	case strings.HasPrefix(kind, "rollout."), kind == schema.EventArtifactRefused:
		if m := genSubject.FindStringSubmatch(subject); m != nil {
			ev.Rollout = strings.TrimPrefix(m[1], "rollout/")
			details["generation"] = m[2]
			if m[3] != "" {
				details["phase"] = m[3]
			}
		} else {
			ev.Rollout = strings.TrimPrefix(subject, "rollout/")
		}
	case strings.HasPrefix(kind, "device."), strings.HasPrefix(kind, "session."):
		ev.Device = strings.TrimPrefix(subject, "device/")
	case strings.HasPrefix(kind, "commit."):
		if subject != "" && subject != e.Commit {
			details["subject"] = subject
		}
	default:
		if subject != "" {
			details["subject"] = subject
		}
	}
	if e.Message != "" {
		details["message"] = bound(e.Message, maxMessage)
	}
	if e.Author != "" {
		details["author"] = bound(e.Author, 256)
	}
	if len(details) > 0 {
		ev.Details = details
	}
	return ev, true
}

// logEventID is the notification ID of a log event: the store's ID (when
// it is made of safe characters) and a digest of what the store
// deduplicates on, so that an event appended again after the dedupe
// window gets a new ID.
func logEventID(e store.Event, id string) string {
	d := e.DedupeKey()[:16]
	if id != "" && len(id) <= 64 && strings.Trim(id, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-._:") == "" {
		return "ev-" + id + "-" + d
	}
	return "ev-" + d + "-" + notify.NewID()
}

// AlertEvent turns an alert record that changed into a notification of
// kind (schema.EventAlertRaised or schema.EventAlertCleared): its device
// and check, and in the details its severity, evidence, key, how many
// times it was raised, whether it is flapping, and for a cleared alert
// how it closed. The ID is derived from the record's device, check, key
// and sequence number, so announcing one change twice makes the same
// notification.
func AlertEvent(a store.Alert, kind string) (notify.Event, error) {
	if kind != schema.EventAlertRaised && kind != schema.EventAlertCleared {
		return notify.Event{}, fmt.Errorf("notifier: alert event kind %q: want %s or %s", kind, schema.EventAlertRaised, schema.EventAlertCleared)
	}
	h := sha256.New()
	for _, s := range []string{kind, a.Device, a.Check, a.Key, strconv.FormatUint(a.Seq, 10)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	ev := notify.Event{
		ID:     "al-" + hex.EncodeToString(h.Sum(nil)[:16]),
		Kind:   notify.Kind(kind),
		Device: a.Device,
		Check:  a.Check,
	}
	details := map[string]string{}
	set := func(k, v string) {
		if v != "" {
			details[k] = v
		}
	}
	set("severity", a.Severity)
	set("evidence", a.Evidence)
	set("key", a.Key)
	if a.Count > 0 {
		set("count", strconv.FormatInt(a.Count, 10))
	}
	if a.Flapping {
		set("flapping", "true")
	}
	switch kind {
	case schema.EventAlertRaised:
		ev.Time = firstSet(a.Raised, a.Updated)
	case schema.EventAlertCleared:
		ev.Time = firstSet(a.Closed, a.Updated)
		set("closing", a.Closing)
	}
	if len(details) > 0 {
		ev.Details = details
	}
	return ev, nil
}

// Alert notifies an alert record that opened (kind schema.EventAlertRaised)
// or closed (schema.EventAlertCleared). The device API calls it once per
// change, on the replica that recorded it; it never blocks. Alerts do not
// go to the event log.
func (n *Notifier) Alert(ctx context.Context, a store.Alert, kind string) {
	ev, err := AlertEvent(a, kind)
	if err != nil {
		n.log.Warn("alert not notified", "device", a.Device, "check", a.Check, "err", err)
		return
	}
	n.Notify(ctx, ev)
}

func firstSet(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

// bound cuts s to at most max bytes of valid UTF-8, marking the cut.
func bound(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "…"
}

// rolloutStore is what addRolloutFacts reads of the store behind the
// event log.
type rolloutStore interface {
	Rollouts(ctx context.Context) ([]store.RolloutRecord, error)
	Progress(ctx context.Context, g store.GenerationRef) (store.Progress, error)
}

// factsTimeout bounds the store reads of addRolloutFacts.
const factsTimeout = 2 * time.Second

// addRolloutFacts adds to a rollout event, when the store behind the log
// can tell, the commit that started or last changed the rollout's
// generation (status.DetailRolloutCommit: a phase's events carry the
// commit live when they happen, which may be a later one) and the
// generation's device counts, all phases together. A store that cannot
// tell, or fails, leaves the event as it is.
func addRolloutFacts(ctx context.Context, log store.EventLog, ev *notify.Event) {
	rs, ok := log.(rolloutStore)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), factsTimeout)
	defer cancel()
	recs, err := rs.Rollouts(ctx)
	if err != nil {
		return
	}
	i := slices.IndexFunc(recs, func(r store.RolloutRecord) bool { return r.Name == ev.Rollout })
	if i < 0 {
		return
	}
	rec := recs[i]
	gen := strconv.FormatInt(rec.Generation, 10)
	if g := ev.Details["generation"]; g != "" && g != gen {
		return // an event of an older generation
	}
	if ev.Details == nil {
		ev.Details = map[string]string{}
	}
	if rec.Commit != "" {
		ev.Details[status.DetailRolloutCommit] = rec.Commit
	}
	p, err := rs.Progress(ctx, store.GenerationRef{Rollout: rec.Name, Generation: rec.Generation})
	if err != nil {
		return
	}
	var admitted, succeeded, failed, timedOut int64
	for _, ph := range p.Phases {
		admitted += ph.Admitted
		succeeded += ph.Succeeded
		failed += ph.Failed
		timedOut += ph.TimedOut
	}
	ev.Details[status.DetailTimedOut] = strconv.FormatInt(timedOut, 10)
	ev.Details[status.DetailAdmitted] = strconv.FormatInt(admitted, 10)
	ev.Details[status.DetailSucceeded] = strconv.FormatInt(succeeded, 10)
	ev.Details[status.DetailFailed] = strconv.FormatInt(failed, 10)
}
