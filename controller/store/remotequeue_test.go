package store

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// recvAll reads q until C closes, failing after 10 s.
func recvAll(t *testing.T, q *SubscriptionQueue) [][]byte {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var got [][]byte
	for {
		select {
		case m, ok := <-q.C():
			if !ok {
				return got
			}
			got = append(got, m)
		case <-deadline:
			t.Fatalf("C not closed within 10 s (%d messages read)", len(got))
		}
	}
}

func TestSubscriptionQueue(t *testing.T) {
	t.Run("end delivers what is queued", func(t *testing.T) {
		q := NewSubscriptionQueue()
		for _, m := range []string{"a", "", "c"} {
			if !q.Push([]byte(m)) {
				t.Fatalf("Push(%q) refused", m)
			}
		}
		q.End()
		if q.Push([]byte("late")) {
			t.Error("Push after End accepted")
		}
		if got := recvAll(t, q); len(got) != 3 || string(got[0]) != "a" || got[1] == nil || len(got[1]) != 0 || string(got[2]) != "c" {
			t.Errorf("got %q", got)
		}
	})
	t.Run("discard drops what is queued", func(t *testing.T) {
		q := NewSubscriptionQueue()
		for range 10 {
			q.Push([]byte("x"))
		}
		q.Discard()
		q.Discard()
		if got := recvAll(t, q); len(got) > 1 { // one may be on its way
			t.Errorf("%d messages after Discard", len(got))
		}
	})
	t.Run("bounded by bytes", func(t *testing.T) {
		q := NewSubscriptionQueue()
		defer q.Discard()
		const size = 1 << 16
		// Thousands of small messages fit.
		for i := range 10000 {
			if !q.Push([]byte("small")) {
				t.Fatalf("small message %d refused", i)
			}
		}
		if got := len(recvSome(t, q, 10000)); got != 10000 {
			t.Fatalf("%d small messages", got)
		}
		n := 0
		for q.Push(bytes.Repeat([]byte{'b'}, size)) {
			n++
			if n > RemoteBufferBytes/size+1 {
				t.Fatalf("%d messages of %d bytes queued, beyond %d bytes", n, size, RemoteBufferBytes)
			}
		}
		if n < RemoteBufferBytes/size-1 {
			t.Fatalf("only %d messages of %d bytes queued before the bound", n, size)
		}
		// Ended by the overflow: what was queued is still delivered.
		if got := recvAll(t, q); len(got) != n {
			t.Errorf("%d of %d queued messages delivered after the overflow", len(got), n)
		}
	})
	t.Run("bounded by count", func(t *testing.T) {
		q := NewSubscriptionQueue()
		defer q.Discard()
		n := 0
		for q.Push(nil) {
			n++
			if n > RemoteBufferMessages+1 {
				t.Fatalf("%d empty messages queued, beyond %d", n, RemoteBufferMessages)
			}
		}
	})
	t.Run("no goroutine left", func(t *testing.T) {
		for i := range 100 {
			q := NewSubscriptionQueue()
			q.Push([]byte("m"))
			switch i % 3 {
			case 0:
				q.Discard()
			case 1:
				q.End()
				recvAll(t, q)
			case 2:
				q.End()
				q.Discard() // a reader that stops reading an ended stream
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			n := strings.Count(stacks, "(*SubscriptionQueue).pump(")
			if n == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d queue goroutines left:\n%s", n, stacks)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func recvSome(t *testing.T, q *SubscriptionQueue, n int) [][]byte {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var got [][]byte
	for len(got) < n {
		select {
		case m, ok := <-q.C():
			if !ok {
				t.Fatalf("C closed after %d of %d messages", len(got), n)
			}
			got = append(got, m)
		case <-deadline:
			t.Fatalf("%d of %d messages within 10 s", len(got), n)
		}
	}
	return got
}
