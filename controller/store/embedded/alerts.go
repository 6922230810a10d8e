package embedded

import (
	"context"

	"github.com/gitfleet/gitfleet/controller/store"
	bolt "go.etcd.io/bbolt"
)

// bAlerts is a generation's alert bucket: "n\x00CHECK" → count, and
// "m\x00CHECK\x00DEVICE" → present while raised.
var bAlerts = []byte("alerts")

func alertBucket(tx *bolt.Tx, g store.GenerationRef, create bool) (*bolt.Bucket, error) {
	if !create {
		root := tx.Bucket(bProgress)
		if root == nil {
			return nil, nil
		}
		b := root.Bucket(generationKey(g))
		if b == nil {
			return nil, nil
		}
		return b.Bucket(bAlerts), nil
	}
	root, err := tx.CreateBucketIfNotExists(bProgress)
	if err != nil {
		return nil, err
	}
	b, err := root.CreateBucketIfNotExists(generationKey(g))
	if err != nil {
		return nil, err
	}
	return b.CreateBucketIfNotExists(bAlerts)
}

// SetAlert raises or clears an alert on a device of a generation.
func (s *Store) SetAlert(ctx context.Context, g store.GenerationRef, device, check string, raised bool) (bool, error) {
	if err := store.ValidateAlert(g, device, check); err != nil {
		return false, err
	}
	changed := false
	err := s.update(ctx, "set alert in "+g.String(), func(tx *bolt.Tx) error {
		b, err := alertBucket(tx, g, true)
		if err != nil {
			return err
		}
		member := []byte("m\x00" + check + "\x00" + device)
		count := "n\x00" + check
		present := b.Get(member) != nil
		switch {
		case raised && !present:
			changed = true
			if err := b.Put(member, []byte{}); err != nil {
				return err
			}
			return b.Put([]byte(count), u64(counter(b, count)+1))
		case !raised && present:
			changed = true
			if err := b.Delete(member); err != nil {
				return err
			}
			if n := counter(b, count); n > 1 {
				return b.Put([]byte(count), u64(n-1))
			}
			return b.Delete([]byte(count))
		}
		return nil
	})
	return changed, err
}

// AlertCounts returns how many devices of g have each alert raised.
func (s *Store) AlertCounts(ctx context.Context, g store.GenerationRef) (map[string]int64, error) {
	if err := store.ValidateGeneration(g, nil); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	err := s.view(ctx, "alert counts of "+g.String(), func(tx *bolt.Tx) error {
		b, err := alertBucket(tx, g, false)
		if err != nil || b == nil {
			return err
		}
		c := b.Cursor()
		prefix := []byte("n\x00")
		for k, _ := c.Seek(prefix); k != nil && len(k) > 2 && k[0] == 'n' && k[1] == 0; k, _ = c.Next() {
			if n := counter(b, string(k)); n > 0 {
				out[string(k[2:])] = int64(n)
			}
		}
		return nil
	})
	return out, err
}
