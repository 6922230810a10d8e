package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// FuncOptions configure a [Func] sink. Zero fields take the defaults noted.
type FuncOptions struct {
	// Name names the sink in logs ("git status", say). Required.
	Name string
	// Deliver sends one event. It runs on the sink's own goroutine, one
	// event at a time in the order they were queued; its ctx ends when
	// the sink is closed and gives up waiting. An error counts the event
	// as failed and is logged. Required.
	Deliver func(ctx context.Context, e Event) error
	// Filter selects the events delivered. Default: all.
	Filter Filter
	// QueueSize bounds the events waiting; when full the oldest is
	// dropped and counted. Default 1024.
	QueueSize int
	Logger    *slog.Logger
	Now       func() time.Time
	Sleep     Sleeper
}

// Func is a [Sink] that delivers each selected event with a function, with
// the filter, bounded queue, goroutine, counters and orderly close of the
// other sinks: the way to add a destination outside this package.
type Func struct {
	worker
}

var _ Sink = (*Func)(nil)

// NewFunc checks opts and starts the sink's worker.
func NewFunc(opts FuncOptions) (*Func, error) {
	if opts.Name == "" || opts.Deliver == nil {
		return nil, fmt.Errorf("%w: a Func sink needs a Name and a Deliver function", ErrOptions)
	}
	if err := opts.Filter.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Name, err)
	}
	f := &Func{}
	f.worker = baseWorker(opts.Name, opts.Filter, opts.QueueSize, 1024, 0, 1, opts.Logger, opts.Now, opts.Sleep)
	deliver := opts.Deliver
	f.deliver = func(ctx context.Context, batch []Event, _ uint64) error {
		var errs []error
		for _, e := range batch {
			errs = append(errs, deliver(ctx, e))
		}
		return errors.Join(errs...)
	}
	f.start()
	return f, nil
}
