package deviceconnect

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
)

// memSessions is an in-memory store.RemoteSessions for this package's
// tests (the stores' own implementations pass storetest).
type memSessions struct {
	mu       sync.Mutex
	subs     map[string]map[*memSub]bool
	conns    map[string]store.RemoteConnection
	sessions map[string]*store.RemoteSession
}

func newMemSessions() *memSessions {
	return &memSessions{subs: map[string]map[*memSub]bool{}, conns: map[string]store.RemoteConnection{}, sessions: map[string]*store.RemoteSession{}}
}

var _ store.RemoteSessions = (*memSessions)(nil)

type memSub struct {
	m     *memSessions
	topic string
	q     *store.SubscriptionQueue // the stores' own bounded queue
}

func (s *memSub) C() <-chan []byte { return s.q.C() }
func (s *memSub) Close() error {
	s.end(true)
	return nil
}

// end unregisters s; drain drops what it holds (Close), otherwise it is
// still delivered.
func (s *memSub) end(drain bool) {
	s.m.mu.Lock()
	delete(s.m.subs[s.topic], s)
	s.m.mu.Unlock()
	if drain {
		s.q.Discard()
	} else {
		s.q.End()
	}
}

func (m *memSessions) Publish(ctx context.Context, topic string, msg []byte) error {
	if err := store.ValidateTopic(topic, msg); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for s := range m.subs[topic] {
		if !s.q.Push(append([]byte{}, msg...)) {
			delete(m.subs[topic], s) // fell too far behind: its queue ended
		}
	}
	return nil
}

func (m *memSessions) Subscribe(ctx context.Context, topic string) (store.Subscription, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := &memSub{m: m, topic: topic, q: store.NewSubscriptionQueue()}
	if m.subs[topic] == nil {
		m.subs[topic] = map[*memSub]bool{}
	}
	m.subs[topic][s] = true
	context.AfterFunc(ctx, func() { s.end(false) })
	return s, nil
}

func (m *memSessions) SetConnected(ctx context.Context, device, conn string, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	c, ok := m.conns[device]
	if ttl == 0 {
		if ok && c.Conn == conn {
			delete(m.conns, device)
		}
		return nil
	}
	if !ok || c.Conn != conn {
		c = store.RemoteConnection{Device: device, Conn: conn, Since: now}
	}
	c.Expires = now.Add(ttl)
	m.conns[device] = c
	return nil
}

func (m *memSessions) Connected(ctx context.Context, device string) (store.RemoteConnection, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c, ok := m.conns[device]
	if !ok || !time.Now().Before(c.Expires) {
		return store.RemoteConnection{}, false, nil
	}
	return c, true, nil
}

func (m *memSessions) StartSession(ctx context.Context, s store.RemoteSession, lease time.Duration, deviceLimit, operatorLimit int) (bool, string, error) {
	if err := store.ValidateRemoteSession(s, lease); err != nil {
		return false, "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	dev, op := 0, 0
	for _, o := range m.sessions {
		if !o.Open(now) {
			continue
		}
		if o.Device == s.Device {
			dev++
		}
		if o.Operator == s.Operator {
			op++
		}
	}
	if deviceLimit > 0 && dev >= deviceLimit {
		return false, "device", nil
	}
	if operatorLimit > 0 && op >= operatorLimit {
		return false, "operator", nil
	}
	s.Lease = now.Add(lease)
	m.sessions[s.ID] = &s
	return true, "", nil
}

func (m *memSessions) TouchSession(ctx context.Context, id string, lease time.Duration, delta store.RemoteTraffic, input []byte, protocols ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return fmt.Errorf("%w: session %s", store.ErrNotFound, id)
	}
	s.Traffic = s.Traffic.Add(delta)
	s.Protocols = store.MergeProtocols(s.Protocols, protocols)
	m.addInput(s, input)
	if !s.Open(time.Now()) {
		return fmt.Errorf("%w: %s", store.ErrSessionEnded, id)
	}
	s.Lease = time.Now().Add(lease)
	return nil
}

func (m *memSessions) addInput(s *store.RemoteSession, input []byte) {
	if !s.RecordInput {
		return
	}
	keep, trunc := store.RecordInput(len(s.Input), input)
	s.Input += string(keep)
	s.InputTruncated = s.InputTruncated || trunc
}

func (m *memSessions) EndSession(ctx context.Context, id string, end time.Time, reason string, delta store.RemoteTraffic, input []byte, protocols ...string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return fmt.Errorf("%w: session %s", store.ErrNotFound, id)
	}
	if !s.Ended.IsZero() {
		return nil
	}
	s.Traffic = s.Traffic.Add(delta)
	s.Protocols = store.MergeProtocols(s.Protocols, protocols)
	m.addInput(s, input)
	s.Ended, s.Reason = end, reason
	return nil
}

func (m *memSessions) Session(ctx context.Context, id string) (store.RemoteSession, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return store.RemoteSession{}, store.ErrNotFound
	}
	return *s, nil
}

func (m *memSessions) Sessions(ctx context.Context, f store.RemoteSessionFilter, limit int) ([]store.RemoteSession, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.RemoteSession
	now := time.Now()
	for _, s := range m.sessions {
		if f.Matches(*s, now) {
			out = append(out, *s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.After(out[j].Started) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
