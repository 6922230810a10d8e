package redis_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/redis"
	"github.com/gitfleet/gitfleet/controller/store/redistest"
	"github.com/gitfleet/gitfleet/controller/store/storetest"
	goredis "github.com/redis/go-redis/v9"
)

// TestDeviceAlertsReplicas: two replicas (two clients on one server or
// cluster) that receive the same device's batches at once apply each event
// once, and a third client started afterwards sees the records and the
// device's last Seq, in the keys package store documents.
func TestDeviceAlertsReplicas(t *testing.T) {
	t.Run("standalone", func(t *testing.T) {
		addr, _ := redistest.Start(t)
		testReplicas(t, redis.Options{Addrs: []string{addr}}, goredis.NewClient(&goredis.Options{Addr: addr}))
	})
	t.Run("cluster", func(t *testing.T) {
		addrs := redistest.StartCluster(t)
		testReplicas(t, redis.Options{Addrs: addrs[:1], Cluster: true}, goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: addrs}))
	})
}

func testReplicas(t *testing.T, opts redis.Options, raw goredis.UniversalClient) {
	ctx := t.Context()
	defer raw.Close()
	opts.Prefix, opts.MaxAlerts = "gfa", storetest.MaxAlerts
	replica := func() *redis.Store {
		s, err := redis.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	replicas := []*redis.Store{replica(), replica()}
	const perReplica = 8
	t0 := time.Date(2021, 6, 1, 0, 0, 0, 0, time.UTC)
	var seq uint64
	for round := range 5 {
		var batch []store.AlertEvent
		for i := range 10 {
			seq++
			kind := store.AlertRaised
			if (i+round)%3 == 2 {
				kind = store.AlertCleared
			}
			batch = append(batch, store.AlertEvent{Seq: seq, Check: "log", Key: fmt.Sprint("k", i%4), Kind: kind,
				Evidence: fmt.Sprint("round ", round), Time: t0.Add(time.Duration(seq) * time.Second)})
		}
		var mu sync.Mutex
		var got []store.Alert
		var errs []error
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, r := range replicas {
			for range perReplica {
				wg.Go(func() {
					<-start
					changed, last, err := r.RecordAlerts(ctx, "dev", batch)
					mu.Lock()
					defer mu.Unlock()
					if err == nil && last != seq {
						err = fmt.Errorf("last seq %d, want %d", last, seq)
					}
					errs = append(errs, err)
					got = append(got, changed...)
				})
			}
		}
		close(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		// The same batch applied once, by one caller, to another device.
		want, _, err := replicas[0].RecordAlerts(ctx, "reference", batch)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			want[i].Device = "dev"
		}
		slices.SortStableFunc(got, func(a, b store.Alert) int { return cmp.Compare(a.Seq, b.Seq) })
		if !slices.EqualFunc(want, got, alertEqual) {
			t.Errorf("round %d: changes returned to %d callers on 2 replicas:\n got %v\nwant %v", round, 2*perReplica, got, want)
		}
	}

	third := replica()
	if _, last, err := third.RecordAlerts(ctx, "dev", nil); err != nil || last != seq {
		t.Errorf("a new client: RecordAlerts(dev, none) = last %d, %v; want %d", last, err, seq)
	}
	mine, err := third.ListAlerts(ctx, store.AlertFilter{Device: "dev", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := third.ListAlerts(ctx, store.AlertFilter{Device: "reference", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := range ref {
		ref[i].Device = "dev"
	}
	if len(mine) != 4 || !slices.EqualFunc(ref, mine, alertEqual) {
		t.Errorf("a new client lists dev's records\n%v\nwant (as applied once)\n%v", mine, ref)
	}

	// The documented keys, and nothing else.
	var keys []string
	if cc, ok := raw.(*goredis.ClusterClient); ok {
		var mu sync.Mutex
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			ks, err := c.Keys(ctx, "gfa:*").Result()
			mu.Lock()
			keys = append(keys, ks...)
			mu.Unlock()
			return err
		})
	} else {
		keys, err = raw.Keys(ctx, "gfa:*").Result()
	}
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	if want := []string{"gfa:{d:dev}:al", "gfa:{d:reference}:al", "gfa:{fleet}:alerts"}; !slices.Equal(keys, want) {
		t.Errorf("keys %q, want %q", keys, want)
	}
	if v, err := raw.HGet(ctx, "gfa:{d:dev}:al", "|seq").Result(); err != nil || v != fmt.Sprint(seq) {
		t.Errorf(`HGET gfa:{d:dev}:al "|seq" = %q, %v; want %d`, v, err, seq)
	}
	if n, err := raw.ZCard(ctx, "gfa:{fleet}:alerts").Result(); err != nil || n != 8 {
		t.Errorf("ZCARD gfa:{fleet}:alerts = %d, %v; want 8 (4 records of 2 devices)", n, err)
	}
}

func alertEqual(a, b store.Alert) bool {
	return a.Device == b.Device && a.Check == b.Check && a.Key == b.Key && a.State == b.State &&
		a.Closing == b.Closing && a.Severity == b.Severity && a.Evidence == b.Evidence && a.Flapping == b.Flapping &&
		a.Raised.Equal(b.Raised) && a.Closed.Equal(b.Closed) && a.Updated.Equal(b.Updated) && a.Count == b.Count && a.Seq == b.Seq
}
