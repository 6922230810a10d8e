package embedded

import (
	"context"
	"fmt"

	"github.com/gitfleet/gitfleet/controller/store"
	bolt "go.etcd.io/bbolt"
)

// Deployment logs live in the generation's bucket, nested bucket "logs":
// device → the encoded store.DeploymentLog. They do not expire: the
// embedded store serves one replica's fleet, and each is bounded.
var bLogs = []byte("logs")

// SetDeploymentLog stores a device's deployment log, bounded.
func (s *Store) SetDeploymentLog(ctx context.Context, g store.GenerationRef, device string, l store.DeploymentLog) (store.DeploymentLog, error) {
	if err := store.ValidateGeneration(g, &device); err != nil {
		return store.DeploymentLog{}, err
	}
	l.Stored = s.opts.Now().UTC().Truncate(1e6)
	l = store.BoundLog(l)
	rec, err := store.EncodeDeploymentLog(l)
	if err != nil {
		return store.DeploymentLog{}, err
	}
	err = s.update(ctx, "deployment log "+g.String(), func(tx *bolt.Tx) error {
		b, err := genBucket(tx, g, false)
		if err != nil {
			return err
		}
		var devices *bolt.Bucket
		if b != nil {
			devices = b.Bucket(bDevices)
		}
		if devices == nil || devices.Get([]byte(device)) == nil {
			return fmt.Errorf("%w: device %s not admitted to %s", store.ErrNotFound, device, g)
		}
		logs, err := b.CreateBucketIfNotExists(bLogs)
		if err != nil {
			return err
		}
		return logs.Put([]byte(device), rec)
	})
	if err != nil {
		return store.DeploymentLog{}, err
	}
	return l, nil
}

// DeploymentLog returns a device's stored deployment log.
func (s *Store) DeploymentLog(ctx context.Context, g store.GenerationRef, device string) (store.DeploymentLog, error) {
	if err := store.ValidateGeneration(g, &device); err != nil {
		return store.DeploymentLog{}, err
	}
	var l store.DeploymentLog
	err := s.view(ctx, "deployment log "+g.String(), func(tx *bolt.Tx) error {
		b, err := genBucket(tx, g, false)
		if err != nil {
			return err
		}
		var v []byte
		if b != nil {
			if logs := b.Bucket(bLogs); logs != nil {
				v = logs.Get([]byte(device))
			}
		}
		if v == nil {
			return fmt.Errorf("%w: no deployment log of %s in %s", store.ErrNotFound, device, g)
		}
		l, err = store.ParseDeploymentLog(v)
		return err
	})
	return l, err
}
