package notify

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Sink is a destination for events. Notify never blocks and never fails:
// an event the sink's filter does not select is ignored, a selected one is
// queued and delivered by the sink's own goroutine. Close stops the sink.
type Sink interface {
	Notify(e Event)
	Close(ctx context.Context) error
	Stats() Stats
}

// Stats counts what a sink did with the events it selected.
type Stats struct {
	Queued    int    // waiting in the queue now
	Dropped   uint64 // dropped from a full queue (oldest first)
	Delivered uint64 // events delivered (a digest of 1,000 counts 1,000)
	Failed    uint64 // events whose delivery finally failed
	Messages  uint64 // requests or mails that succeeded
}

// Sleeper waits for d or until ctx is done, returning ctx.Err() then. Tests
// inject one to control backoff and batch windows without wall-clock waits.
type Sleeper func(ctx context.Context, d time.Duration) error

func realSleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// worker is the part every sink shares: filter, bounded queue, one
// delivering goroutine, batching windows and an orderly close.
type worker struct {
	name     string // sink kind for logs: "webhook", "email", "slack"
	filter   Filter
	q        *queue
	window   time.Duration // 0: deliver events one at a time
	maxBatch int
	sleep    Sleeper
	now      func() time.Time
	log      *slog.Logger
	deliver  func(ctx context.Context, batch []Event, dropped uint64) error

	stopping  chan struct{} // closed when Close starts: flush, no more windows
	stopOnce  sync.Once
	runCtx    context.Context // cancelled when Close gives up waiting
	cancelRun context.CancelFunc
	done      chan struct{}
	closed    atomic.Bool
	delivered atomic.Uint64
	failed    atomic.Uint64
	messages  atomic.Uint64
}

func (w *worker) start() {
	w.stopping = make(chan struct{})
	w.done = make(chan struct{})
	w.runCtx, w.cancelRun = context.WithCancel(context.Background())
	go w.run()
}

// Notify queues e if the filter selects it. Events with an unknown kind
// are logged and ignored: they are a bug in the caller, not something a
// receiver should see.
func (w *worker) Notify(e Event) {
	if w.closed.Load() {
		return
	}
	if err := e.Validate(); err != nil {
		w.log.Warn("notification event ignored", "sink", w.name, "err", err)
		return
	}
	if !w.filter.Match(e) {
		return
	}
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.Time.IsZero() {
		e.Time = w.now()
	}
	w.q.push(e)
}

// Stats returns the sink's counters.
func (w *worker) Stats() Stats {
	return Stats{
		Queued:    w.q.len(),
		Dropped:   w.q.droppedTotal(),
		Delivered: w.delivered.Load(),
		Failed:    w.failed.Load(),
		Messages:  w.messages.Load(),
	}
}

// Close stops taking events, delivers what is queued (without waiting for
// a batch window) and returns when that is done or ctx ends, whichever is
// first; then in-flight deliveries are cancelled and whatever is still
// queued is lost (counted as failed).
func (w *worker) Close(ctx context.Context) error {
	w.closed.Store(true)
	w.stopOnce.Do(func() { close(w.stopping) })
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		w.cancelRun()
		<-w.done
		return ctx.Err()
	}
}

func (w *worker) run() {
	defer close(w.done)
	defer w.cancelRun()
	// windowCtx ends a batch window early when Close starts.
	windowCtx, cancelWindow := context.WithCancel(w.runCtx)
	defer cancelWindow()
	go func() {
		select {
		case <-w.stopping:
			cancelWindow()
		case <-windowCtx.Done():
		}
	}()
	for {
		select {
		case <-w.q.ready:
		case <-w.stopping:
			w.flush()
			return
		}
		if w.window > 0 && windowCtx.Err() == nil {
			_ = w.sleep(windowCtx, w.window) // cut short by Close: flush now
		}
		if w.runCtx.Err() != nil {
			w.drop()
			return
		}
		w.once()
	}
}

// once delivers one batch (or one event when there is no window).
func (w *worker) once() {
	max := 1
	if w.window > 0 {
		max = w.maxBatch
	}
	batch, dropped := w.q.take(max)
	if len(batch) == 0 {
		return
	}
	if err := w.deliver(w.runCtx, batch, dropped); err != nil {
		w.failed.Add(uint64(len(batch)))
		w.log.Error("notification not delivered", "sink", w.name, "events", len(batch),
			"first_delivery", batch[0].ID, "event", string(batch[0].Kind), "err", err)
		return
	}
	w.delivered.Add(uint64(len(batch)))
	w.messages.Add(1)
}

func (w *worker) flush() {
	for w.q.len() > 0 && w.runCtx.Err() == nil {
		w.once()
	}
	w.drop()
}

func (w *worker) drop() {
	if rest, _ := w.q.take(0); len(rest) > 0 {
		w.failed.Add(uint64(len(rest)))
		w.log.Warn("notifications lost at close", "sink", w.name, "events", len(rest))
	}
}
