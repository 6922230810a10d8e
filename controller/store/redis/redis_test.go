package redis_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	"github.com/gitfleet/gitfleet/controller/store/storetest"
)

// prefixes gives every store in a test its own key prefix, so parallel
// subtests share one server without seeing each other's keys.
var prefixes atomic.Int64

func newStore(t *testing.T, opts redis.Options) *redis.Store {
	t.Helper()
	opts.Prefix = fmt.Sprintf("gft%d", prefixes.Add(1))
	opts.MaxEvents = storetest.MaxEvents
	s, err := redis.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	addr, _ := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return newStore(t, redis.Options{Addrs: []string{addr}})
	})
}

func TestConformanceCluster(t *testing.T) {
	addrs := redistest.StartCluster(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		return newStore(t, redis.Options{Addrs: addrs[:1], Cluster: true})
	})
}

func TestRestart(t *testing.T) {
	storetest.RunRestart(t, func(t *testing.T) (store.Store, func() store.Store) {
		addr, restart := redistest.Start(t)
		s := newStore(t, redis.Options{URL: "redis://" + addr + "/0"})
		return s, func() store.Store {
			restart()
			return s // the same client reconnects by itself
		}
	})
}
