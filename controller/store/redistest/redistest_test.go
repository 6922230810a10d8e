package redistest_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/gitfleet/gitfleet/controller/store/redistest"
	goredis "github.com/redis/go-redis/v9"
)

func TestStartRestart(t *testing.T) {
	addr, restart := redistest.Start(t)
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	restart()
	got, err := c.Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("after restart: GET k = %q, %v; want \"v\"", got, err)
	}
}

func TestStartCluster(t *testing.T) {
	addrs := redistest.StartCluster(t)
	c := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs})
	defer c.Close()
	ctx := t.Context()
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		if err := c.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var n atomic.Int32 // ForEachMaster calls in parallel
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *goredis.Client) error {
		n.Add(1)
		return m.Ping(ctx).Err()
	})
	if err != nil || n.Load() != 3 {
		t.Fatalf("masters: %d, %v; want 3", n.Load(), err)
	}
}
