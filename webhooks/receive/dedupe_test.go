package receive

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestMemoryDeduperTTL(t *testing.T) {
	c := newClock()
	d := NewMemoryDeduper(0, c.Now)
	ctx := context.Background()
	first := func(id string, ttl time.Duration) bool {
		t.Helper()
		ok, err := d.FirstDelivery(ctx, id, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !first("a", time.Minute) {
		t.Fatal("first delivery of a")
	}
	if first("a", time.Minute) {
		t.Fatal("second delivery of a")
	}
	if !first("b", time.Minute) {
		t.Fatal("first delivery of b")
	}
	c.Advance(time.Minute - time.Nanosecond)
	if first("a", time.Minute) {
		t.Fatal("a just before its TTL ran out")
	}
	c.Advance(time.Nanosecond)
	if !first("a", time.Minute) {
		t.Fatal("a once its TTL ran out")
	}
	// b expired at the same instant and was swept.
	if n := d.Len(); n != 1 {
		t.Fatalf("Len = %d, want 1", n)
	}
	if first("a", time.Minute) {
		t.Fatal("a recorded again")
	}
}

func TestMemoryDeduperBounded(t *testing.T) {
	c := newClock()
	d := NewMemoryDeduper(3, c.Now)
	ctx := context.Background()
	for i := range 5 {
		if ok, _ := d.FirstDelivery(ctx, fmt.Sprint(i), time.Hour); !ok {
			t.Fatalf("%d not first", i)
		}
	}
	if n := d.Len(); n != 3 {
		t.Fatalf("Len = %d, want 3", n)
	}
	// The oldest were evicted, the newest remembered.
	if ok, _ := d.FirstDelivery(ctx, "4", time.Hour); ok {
		t.Error("4 forgotten")
	}
	if ok, _ := d.FirstDelivery(ctx, "0", time.Hour); !ok {
		t.Error("0 still remembered")
	}
}

func TestMemoryDeduperMixedTTL(t *testing.T) {
	c := newClock()
	d := NewMemoryDeduper(0, c.Now)
	ctx := context.Background()
	d.FirstDelivery(ctx, "long", time.Hour)
	d.FirstDelivery(ctx, "short", time.Second)
	c.Advance(2 * time.Second)
	if ok, _ := d.FirstDelivery(ctx, "short", time.Second); !ok {
		t.Error("short outlived its TTL behind a longer one")
	}
	if ok, _ := d.FirstDelivery(ctx, "long", time.Hour); ok {
		t.Error("long forgotten")
	}
}
