package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/webhooks/notify"
)

// Details an event may carry that [FromEvent] reads. The controller's
// notifier adds them to rollout events when a gitStatus sink is
// configured.
const (
	// DetailRolloutCommit is the commit that started or last changed the
	// rollout's generation; the status goes there. Without it, the
	// event's own commit.
	DetailRolloutCommit = "rollout_commit"
	// DetailAdmitted, DetailSucceeded and DetailFailed are the
	// generation's device counts, all phases together.
	DetailAdmitted  = "admitted"
	DetailSucceeded = "succeeded"
	DetailFailed    = "failed"
	// DetailTimedOut counts the devices that did not finish in time; it
	// is shown when not zero.
	DetailTimedOut = "timed_out"
)

// ContextPrefix starts the context of every status: "gitfleet/rollout/"
// and the rollout's name.
const ContextPrefix = "gitfleet/rollout/"

// FromEvent is the commit status of a rollout event, and whether it has
// one. rollout.started, rollout.artifact, rollout.settings,
// rollout.phase_opened, rollout.phase_completed,
// rollout.awaiting_approval and rollout.paused are Pending;
// rollout.completed is Success; rollout.aborted is Failure, its reason in
// the description. Other events (rollout.stopped included: a removed
// rollout leaves the status it had) have none, nor has an event without a
// rollout or a full commit SHA. link, when not nil, makes the target URL
// from the rollout's name.
func FromEvent(e notify.Event, link func(rollout string) string) (Status, bool) {
	if e.Rollout == "" {
		return Status{}, false
	}
	d := e.Details
	sha := d[DetailRolloutCommit]
	if sha == "" {
		sha = e.Commit
	}
	if !shaPattern.MatchString(sha) {
		return Status{}, false
	}
	st := Status{SHA: sha, State: Pending, Context: ContextPrefix + e.Rollout}
	gen := ""
	if g := d["generation"]; g != "" {
		gen = " (generation " + g + ")"
	}
	phase := d["phase"]
	var what string
	switch e.Kind {
	case notify.RolloutStarted:
		what = "rollout started" + gen
	case notify.RolloutArtifact:
		what = "new artifact: rollout restarted" + gen
	case notify.RolloutSettings:
		what = "settings changed" + gen
	case notify.RolloutPhaseOpened:
		what = "phase " + phase + " opened"
	case notify.RolloutPhaseCompleted:
		what = "phase " + phase + " completed"
	case notify.RolloutAwaitingApproval:
		what = "waiting for approval"
		if phase != "" {
			what += " of phase " + phase
		}
	case notify.RolloutPaused:
		what = "paused: nobody new is admitted"
	case notify.RolloutCompleted:
		st.State, what = Success, "rollout completed"+gen
	case notify.RolloutAborted:
		st.State, what = Failure, "aborted"
		if reason := oneLine(d["message"]); reason != "" {
			what += ": " + reason
		}
	default:
		return Status{}, false
	}
	if counts := countsOf(d); counts != "" {
		// The counts come first after a short "what", so that a long
		// abort reason is what the cut shortens.
		if e.Kind == notify.RolloutAborted {
			what = "aborted (" + counts + ")" + strings.TrimPrefix(what, "aborted")
		} else {
			what += "; " + counts
		}
	}
	st.Description = Cut(what, MaxDescription)
	if link != nil {
		st.TargetURL = link(e.Rollout)
	}
	return st, true
}

// countsOf is "3 admitted, 2 succeeded, 1 failed", or "" without counts.
func countsOf(d map[string]string) string {
	var parts []string
	for _, k := range []string{DetailAdmitted, DetailSucceeded, DetailFailed} {
		if v := d[k]; v != "" {
			if _, err := strconv.ParseUint(v, 10, 63); err == nil {
				parts = append(parts, v+" "+k)
			}
		}
	}
	if v := d[DetailTimedOut]; v != "" && v != "0" {
		if _, err := strconv.ParseUint(v, 10, 63); err == nil {
			parts = append(parts, v+" timed out")
		}
	}
	return strings.Join(parts, ", ")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// SinkOptions configure a [Sink]. Zero fields take the defaults noted.
type SinkOptions struct {
	// Client sets the statuses. Required.
	Client *Client
	// Filter selects the events; only those with a status (see
	// FromEvent) are sent either way. Default: all.
	Filter notify.Filter
	// Link makes a status's target URL from the rollout's name; nil: no
	// link.
	Link func(rollout string) string
	// QueueSize bounds the statuses waiting. Default 1024.
	QueueSize int
	Logger    *slog.Logger
	Now       func() time.Time
	Sleep     notify.Sleeper
}

// Sink is a [notify.Sink] that sets the commit status of each rollout
// event, one at a time in the order they came. A final refusal of the
// host (a bad token, a missing repository) is logged, counted as failed
// and kept as [Sink.Problem] until a status goes through.
type Sink struct {
	*notify.Func
	client *Client
	link   func(string) string
	log    *slog.Logger

	mu      sync.Mutex
	problem error
}

var _ notify.Sink = (*Sink)(nil)

// NewSink checks opts and starts the sink.
func NewSink(opts SinkOptions) (*Sink, error) {
	if opts.Client == nil {
		return nil, fmt.Errorf("%w: a status Sink needs a Client", ErrOptions)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sink{client: opts.Client, link: opts.Link, log: log}
	f, err := notify.NewFunc(notify.FuncOptions{Name: "git status", Deliver: s.deliver, Filter: opts.Filter,
		QueueSize: opts.QueueSize, Logger: log, Now: opts.Now, Sleep: opts.Sleep})
	if err != nil {
		return nil, err
	}
	s.Func = f
	return s, nil
}

func (s *Sink) deliver(ctx context.Context, e notify.Event) error {
	st, ok := FromEvent(e, s.link)
	if !ok {
		return nil
	}
	err := s.client.Set(ctx, st)
	var he *HTTPError
	s.mu.Lock()
	switch {
	case err == nil:
		s.problem = nil
	case errors.As(err, &he) && he.Code != 0 && !retryable(he.Code):
		s.problem = err
	}
	s.mu.Unlock()
	return err
}

func retryable(code int) bool {
	return code == 408 || code == 429 || code >= 500
}

// Problem returns the last final refusal of the host (HTTP 401, 403, 404,
// …) when no status went through since; nil otherwise.
func (s *Sink) Problem() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.problem
}
