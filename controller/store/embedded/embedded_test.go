package embedded_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/controller/store/embedded"
	"github.com/gitfleet/gitfleet/controller/store/storetest"
)

func open(t *testing.T, path string) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(path, embedded.Options{Bounds: store.Bounds{MaxEvents: storetest.MaxEvents,
		MaxPending: storetest.MaxPending, MaxConflicts: storetest.MaxConflicts, PendingTTL: storetest.PendingTTL,
		MaxAlerts: storetest.MaxAlerts, MaxRemoteSessions: storetest.MaxRemoteSessions}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := open(t, filepath.Join(t.TempDir(), embedded.FileName))
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestRestart(t *testing.T) {
	storetest.RunRestart(t, func(t *testing.T) (store.Store, func() store.Store) {
		path := filepath.Join(t.TempDir(), embedded.FileName)
		s := open(t, path)
		t.Cleanup(func() { s.Close() })
		return s, func() store.Store {
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = open(t, path)
			return s
		}
	})
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), embedded.FileName)
	s := open(t, path)
	defer s.Close()
	_, err := embedded.Open(path, embedded.Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, embedded.ErrLocked) {
		t.Fatalf("second Open of a file in use: err = %v, want ErrLocked", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := embedded.Open(path, embedded.Options{LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	s2.Close()
}
