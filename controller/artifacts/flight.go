package artifacts

import (
	"context"
	"sync"
)

// flights runs one function per key at a time: callers that ask for a key
// already in flight wait for its result instead of fetching the same bytes
// again.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done chan struct{}
	val  any
	err  error
}

// do runs fn once for key and hands its result to every caller that asked
// meanwhile. A waiter whose ctx ends stops waiting; the flight goes on for
// the others.
func (fs *flights) do(ctx context.Context, key string, fn func() (any, error)) (any, error) {
	fs.mu.Lock()
	if fs.m == nil {
		fs.m = map[string]*flight{}
	}
	if f, ok := fs.m[key]; ok {
		fs.mu.Unlock()
		select {
		case <-f.done:
			return f.val, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	fs.m[key] = f
	fs.mu.Unlock()
	defer func() {
		fs.mu.Lock()
		delete(fs.m, key)
		fs.mu.Unlock()
		close(f.done)
	}()
	f.val, f.err = fn()
	return f.val, f.err
}
