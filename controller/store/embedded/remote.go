package embedded

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	bolt "go.etcd.io/bbolt"
)

// Remote sessions (store.RemoteSessions). The bus is process-local (see
// remotebus.go); presence and session records are in bbolt, so they
// survive a restart, and a session left open by a controller that stopped
// stops counting against the limits when its lease runs out.
//
// Buckets:
//
//	rconn       device → RemoteConnection JSON
//	rsess       session ID → RemoteSession JSON (without Input)
//	rsess.in    session ID → recorded input (raw bytes)
//	rsess.seq   start (8 bytes, ordered) + session ID → session ID;
//	            the count of records is meta's rs.count
//	rsess.open  'd' or 'o', name length (2 bytes), device or operator
//	            name, session ID → lease (unix ns, 8 bytes): the sessions
//	            not ended, pruned of run-out leases as StartSession counts
var (
	bRConn     = []byte("rconn")
	bRSess     = []byte("rsess")
	bRSessIn   = []byte("rsess.in")
	bRSessSeq  = []byte("rsess.seq")
	bRSessOpen = []byte("rsess.open")

	kRSessCount = []byte("rs.count")
)

var _ store.RemoteSessions = (*Store)(nil)

// Publish sends msg to topic's subscribers in this process.
func (s *Store) Publish(ctx context.Context, topic string, msg []byte) error {
	if err := store.ValidateTopic(topic, msg); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("embedded: publish %s: %w", topic, err)
	}
	return s.bus.publish(topic, msg)
}

// Subscribe receives what is published to topic in this process.
func (s *Store) Subscribe(ctx context.Context, topic string) (store.Subscription, error) {
	if err := store.ValidateTopic(topic, nil); err != nil {
		return nil, err
	}
	sub, err := s.bus.subscribe(ctx, topic)
	if err != nil {
		return nil, err
	}
	return sub, nil
}

// SetConnected records, renews or clears a device's connection.
func (s *Store) SetConnected(ctx context.Context, device, conn string, ttl time.Duration) error {
	if err := store.ValidateConnection(device, conn, ttl); err != nil {
		return err
	}
	now := s.opts.Now()
	return s.update(ctx, "set connected", func(tx *bolt.Tx) error {
		b := tx.Bucket(bRConn)
		var cur store.RemoteConnection
		if v := b.Get([]byte(device)); v != nil {
			if err := json.Unmarshal(v, &cur); err != nil {
				return fmt.Errorf("connection of %s: %w", device, err)
			}
		}
		live := cur.Conn == conn && now.Before(cur.Expires)
		if ttl == 0 {
			if cur.Conn == conn {
				return b.Delete([]byte(device))
			}
			return nil
		}
		if !live {
			cur = store.RemoteConnection{Device: device, Conn: conn, Since: now}
		}
		cur.Expires = now.Add(ttl)
		return putJSON(b, []byte(device), cur)
	})
}

// Connected returns the device's connection record unless it lapsed.
func (s *Store) Connected(ctx context.Context, device string) (store.RemoteConnection, bool, error) {
	if err := store.ValidateConnection(device, "-", 0); err != nil {
		return store.RemoteConnection{}, false, err
	}
	var c store.RemoteConnection
	found := false
	err := s.view(ctx, "connected", func(tx *bolt.Tx) error {
		v := tx.Bucket(bRConn).Get([]byte(device))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &c)
	})
	if err != nil || !found || !s.opts.Now().Before(c.Expires) {
		return store.RemoteConnection{}, false, err
	}
	return c, true, nil
}

// openKey is a rsess.open key: kind 'd' (device) or 'o' (operator), the
// name, and the session ID ("" for the prefix of all the name's keys).
func openKey(kind byte, name, id string) []byte {
	k := make([]byte, 0, 3+len(name)+len(id))
	k = append(k, kind)
	k = binary.BigEndian.AppendUint16(k, uint16(len(name)))
	k = append(k, name...)
	return append(k, id...)
}

// seqKey orders records by start, then ID.
func seqKey(started time.Time, id string) []byte {
	return append(u64(uint64(started.UnixNano())^1<<63), id...)
}

// countOpen counts the sessions under prefix whose lease has not run out
// at now, deleting the others.
func countOpen(open *bolt.Bucket, prefix []byte, now time.Time) (int, error) {
	n := 0
	var stale [][]byte
	c := open.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(v) == 8 && now.UnixNano() < int64(binary.BigEndian.Uint64(v)) {
			n++
		} else {
			stale = append(stale, bytes.Clone(k))
		}
	}
	for _, k := range stale {
		if err := open.Delete(k); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// StartSession records a session if the limits allow it, in one
// transaction.
func (s *Store) StartSession(ctx context.Context, rs store.RemoteSession, lease time.Duration, deviceLimit, operatorLimit int) (bool, string, error) {
	if err := store.ValidateRemoteSession(rs, lease); err != nil {
		return false, "", err
	}
	rs.Lease = rs.Started.Add(lease)
	enc, err := json.Marshal(rs)
	if err != nil {
		return false, "", fmt.Errorf("embedded: start session %s: %w", rs.ID, err)
	}
	now := s.opts.Now()
	limit := ""
	err = s.update(ctx, "start session", func(tx *bolt.Tx) error {
		limit = ""
		sess, open := tx.Bucket(bRSess), tx.Bucket(bRSessOpen)
		if sess.Get([]byte(rs.ID)) != nil {
			return fmt.Errorf("%w: session %s already exists", store.ErrInvalid, rs.ID)
		}
		for _, l := range []struct {
			kind  byte
			name  string
			limit int
			what  string
		}{{'d', rs.Device, deviceLimit, "device"}, {'o', rs.Operator, operatorLimit, "operator"}} {
			n, err := countOpen(open, openKey(l.kind, l.name, ""), now)
			if err != nil {
				return err
			}
			if l.limit > 0 && n >= l.limit {
				limit = l.what
				return nil
			}
		}
		if err := sess.Put([]byte(rs.ID), enc); err != nil {
			return err
		}
		leaseV := u64(uint64(rs.Lease.UnixNano()))
		if err := open.Put(openKey('d', rs.Device, rs.ID), leaseV); err != nil {
			return err
		}
		if err := open.Put(openKey('o', rs.Operator, rs.ID), leaseV); err != nil {
			return err
		}
		if err := tx.Bucket(bRSessSeq).Put(seqKey(rs.Started, rs.ID), []byte(rs.ID)); err != nil {
			return err
		}
		return s.trimSessions(tx)
	})
	if err != nil {
		return false, "", err
	}
	return limit == "", limit, nil
}

// trimSessions counts a new record and drops the oldest beyond the bound.
func (s *Store) trimSessions(tx *bolt.Tx) error {
	meta := tx.Bucket(bMeta)
	n := uint64(0)
	if v := meta.Get(kRSessCount); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	n++
	seq, sess, in, open := tx.Bucket(bRSessSeq), tx.Bucket(bRSess), tx.Bucket(bRSessIn), tx.Bucket(bRSessOpen)
	c := seq.Cursor()
	for k, id := c.First(); k != nil && n > uint64(s.opts.MaxRemoteSessions); k, id = c.First() {
		var rec store.RemoteSession
		if v := sess.Get(id); v != nil && json.Unmarshal(v, &rec) == nil {
			if err := open.Delete(openKey('d', rec.Device, rec.ID)); err != nil {
				return err
			}
			if err := open.Delete(openKey('o', rec.Operator, rec.ID)); err != nil {
				return err
			}
		}
		id = bytes.Clone(id)
		if err := c.Delete(); err != nil {
			return err
		}
		if err := sess.Delete(id); err != nil {
			return err
		}
		if err := in.Delete(id); err != nil {
			return err
		}
		n--
	}
	return meta.Put(kRSessCount, u64(n))
}

// TouchSession renews a session's lease and adds to its counters.
func (s *Store) TouchSession(ctx context.Context, id string, lease time.Duration, delta store.RemoteTraffic, input []byte, protocols ...string) error {
	if err := store.ValidateSessionUpdate(id, lease, time.Time{}, "", delta, false, protocols...); err != nil {
		return err
	}
	return s.updateSession(ctx, "touch session", id, func(rec *store.RemoteSession, open *bolt.Bucket, now time.Time) (bool, error) {
		if !rec.Open(now) {
			return true, fmt.Errorf("session %s: %w", id, store.ErrSessionEnded)
		}
		rec.Lease = now.Add(lease)
		leaseV := u64(uint64(rec.Lease.UnixNano()))
		if err := open.Put(openKey('d', rec.Device, rec.ID), leaseV); err != nil {
			return false, err
		}
		return true, open.Put(openKey('o', rec.Operator, rec.ID), leaseV)
	}, delta, input, protocols)
}

// EndSession ends a session once.
func (s *Store) EndSession(ctx context.Context, id string, end time.Time, reason string, delta store.RemoteTraffic, input []byte, protocols ...string) error {
	if err := store.ValidateSessionUpdate(id, 0, end, reason, delta, true, protocols...); err != nil {
		return err
	}
	return s.updateSession(ctx, "end session", id, func(rec *store.RemoteSession, open *bolt.Bucket, _ time.Time) (bool, error) {
		if !rec.Ended.IsZero() {
			return false, nil // ended before: keep that end, count nothing again
		}
		rec.Ended, rec.Reason = end, reason
		if err := open.Delete(openKey('d', rec.Device, rec.ID)); err != nil {
			return false, err
		}
		return true, open.Delete(openKey('o', rec.Operator, rec.ID))
	}, delta, input, protocols)
}

// updateSession loads session id, lets fn change it (fn reports whether
// to add delta, input and protocols, and may return an error that still
// commits: one wrapping ErrSessionEnded), and writes it back.
func (s *Store) updateSession(ctx context.Context, what, id string, fn func(rec *store.RemoteSession, open *bolt.Bucket, now time.Time) (bool, error), delta store.RemoteTraffic, input []byte, protocols []string) error {
	now := s.opts.Now()
	var after error
	err := s.update(ctx, what, func(tx *bolt.Tx) error {
		after = nil
		sess, in := tx.Bucket(bRSess), tx.Bucket(bRSessIn)
		v := sess.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("%w: remote session %s", store.ErrNotFound, id)
		}
		var rec store.RemoteSession
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("session %s: %w", id, err)
		}
		add, err := fn(&rec, tx.Bucket(bRSessOpen), now)
		if err != nil && !errors.Is(err, store.ErrSessionEnded) {
			return err
		}
		after = err // ErrSessionEnded: the counters are still added
		if !add {
			return nil
		}
		rec.Traffic = rec.Traffic.Add(delta)
		rec.Protocols = store.MergeProtocols(rec.Protocols, protocols)
		if len(input) > 0 {
			rec.RecordInput = true
			have := in.Get([]byte(id))
			keep, truncated := store.RecordInput(len(have), input)
			if len(keep) > 0 {
				if err := in.Put([]byte(id), append(bytes.Clone(have), keep...)); err != nil {
					return err
				}
			}
			rec.InputTruncated = rec.InputTruncated || truncated
		}
		return putJSON(sess, []byte(id), rec)
	})
	if err != nil {
		return err
	}
	return after
}

// Session returns one session record.
func (s *Store) Session(ctx context.Context, id string) (store.RemoteSession, error) {
	var rec store.RemoteSession
	err := s.view(ctx, "session", func(tx *bolt.Tx) error {
		var ok bool
		var err error
		rec, ok, err = loadSession(tx, []byte(id))
		if err == nil && !ok {
			err = fmt.Errorf("%w: remote session %s", store.ErrNotFound, id)
		}
		return err
	})
	return rec, err
}

func loadSession(tx *bolt.Tx, id []byte) (store.RemoteSession, bool, error) {
	var rec store.RemoteSession
	v := tx.Bucket(bRSess).Get(id)
	if v == nil {
		return rec, false, nil
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, false, fmt.Errorf("session %s: %w", id, err)
	}
	rec.Input = string(tx.Bucket(bRSessIn).Get(id))
	return rec, true, nil
}

// Sessions lists session records, newest start first.
func (s *Store) Sessions(ctx context.Context, f store.RemoteSessionFilter, limit int) ([]store.RemoteSession, error) {
	limit, err := store.PageLimit(limit)
	if err != nil {
		return nil, err
	}
	now := s.opts.Now()
	var out []store.RemoteSession
	err = s.view(ctx, "sessions", func(tx *bolt.Tx) error {
		sess := tx.Bucket(bRSess)
		c := tx.Bucket(bRSessSeq).Cursor()
		for k, id := c.Last(); k != nil && len(out) < limit; k, id = c.Prev() {
			v := sess.Get(id)
			if v == nil {
				continue
			}
			var rec store.RemoteSession
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("session %s: %w", id, err)
			}
			if !f.Matches(rec, now) {
				continue
			}
			rec.Input = string(tx.Bucket(bRSessIn).Get(id))
			out = append(out, rec)
		}
		return nil
	})
	return out, err
}
