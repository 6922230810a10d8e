// Package redis is the store that several controller replicas share: a
// single Redis server or a Redis Cluster, through go-redis.
//
// The key layout is documented in package store. Every transition that
// reads before it writes (compare-and-set of the live commit, recording a
// refusal once, applying a commit's rollouts, appending a deduplicated event)
// is one Lua script, run with EVALSHA and loaded again if the server lost
// its script cache (a restart): a script runs atomically, so replicas racing
// for the same transition see each other's effects whole. The keys a script
// touches share the {fleet} hash tag, so they live in one Cluster slot.
// Webhook delivery IDs, which are only ever touched alone, each get their own
// tag and spread over the cluster.
//
// The store keeps nothing in memory between calls: after Redis restarts,
// go-redis reconnects and the next call sees whatever the server persisted.
// Run Redis with an append-only file (appendonly yes) so nothing is lost.
package redis

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// Options configure New. Give Client, or URL, or Addrs.
type Options struct {
	// Client is an existing go-redis client (standalone or cluster). The
	// store does not close it.
	Client goredis.UniversalClient
	// URL is redis://[user:password@]host:port[/db] or rediss://… for TLS.
	// With Cluster, extra nodes may be given as ?addr=host:port&addr=….
	URL string
	// Addrs are host:port of one server, or of several cluster nodes.
	Addrs []string
	// Cluster selects Redis Cluster even with a single address. Several
	// Addrs always mean a cluster.
	Cluster bool
	// Username, Password and TLS apply to Addrs.
	Username, Password string
	TLS                *tls.Config

	// Prefix starts every key. Default "gf". It may not contain '{' or '}'.
	Prefix string
	// Bounds: the event log, event deduplication, pending and conflict
	// records.
	store.Bounds
	// Now is the clock for the times the store records. Default time.Now.
	Now func() time.Time
}

// Store is the Redis store. Create it with New.
type Store struct {
	c     goredis.UniversalClient
	owned bool // the store created c and closes it
	k     keys
	opts  Options
	bus   bus // remote sessions' Subscriptions (remotebus.go)
}

var _ store.Store = (*Store)(nil)

// New connects to Redis as opts say. It does not wait for the server: a
// store created while Redis is down works once Redis is up (see Ping).
func New(opts Options) (*Store, error) {
	if opts.Prefix == "" {
		opts.Prefix = "gf"
	}
	if strings.ContainsAny(opts.Prefix, "{}") {
		return nil, fmt.Errorf("redis: key prefix %q: braces would break the hash tags", opts.Prefix)
	}
	opts.Bounds = opts.Bounds.WithDefaults()
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{c: opts.Client, k: keys{opts.Prefix}, opts: opts}
	switch {
	case opts.Client != nil:
	case opts.URL != "" && (opts.Cluster || strings.Contains(opts.URL, "addr=")):
		o, err := goredis.ParseClusterURL(opts.URL)
		if err != nil {
			return nil, fmt.Errorf("redis: cluster URL: %w", redactURL(err, opts.URL))
		}
		s.c, s.owned = goredis.NewClusterClient(o), true
	case opts.URL != "":
		o, err := goredis.ParseURL(opts.URL)
		if err != nil {
			return nil, fmt.Errorf("redis: URL: %w", redactURL(err, opts.URL))
		}
		s.c, s.owned = goredis.NewClient(o), true
	case len(opts.Addrs) > 0:
		s.c, s.owned = goredis.NewUniversalClient(&goredis.UniversalOptions{
			// A copy: go-redis appends discovered nodes to this slice,
			// which would write into the caller's backing array.
			Addrs: slices.Clone(opts.Addrs), IsClusterMode: opts.Cluster,
			Username: opts.Username, Password: opts.Password, TLSConfig: opts.TLS,
		}), true
	default:
		return nil, errors.New("redis: no Client, URL or Addrs")
	}
	return s, nil
}

// redactURL keeps a password in a URL out of an error message.
func redactURL(err error, url string) error {
	msg := err.Error()
	if i := strings.Index(url, "://"); i >= 0 {
		if j := strings.LastIndex(url, "@"); j > i {
			msg = strings.ReplaceAll(msg, url[i+3:j], "…")
		}
	}
	return errors.New(msg)
}

// Close ends every Subscription and closes the client if New created it.
func (s *Store) Close() error {
	s.bus.close()
	if !s.owned {
		return nil
	}
	if err := s.c.Close(); err != nil {
		return fmt.Errorf("redis: close: %w", err)
	}
	return nil
}

// Ping checks that Redis answers: every master of a cluster.
func (s *Store) Ping(ctx context.Context) error {
	var err error
	if cc, ok := s.c.(*goredis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
			return c.Ping(ctx).Err()
		})
	} else {
		err = s.c.Ping(ctx).Err()
	}
	if err != nil {
		return fmt.Errorf("redis: ping: %w", err)
	}
	return nil
}

// keys builds the key names documented in package store.
type keys struct{ prefix string }

func (k keys) fleet(name string) string    { return k.prefix + ":{fleet}:" + name }
func (k keys) live() string                { return k.fleet("live") }
func (k keys) refused() string             { return k.fleet("refused") }
func (k keys) refusedOrder() string        { return k.fleet("refused:order") }
func (k keys) refusedLast() string         { return k.fleet("refused:last") }
func (k keys) rollouts() string            { return k.fleet("ro") }
func (k keys) rolloutsApplied() string     { return k.fleet("ro:applied") }
func (k keys) events() string              { return k.fleet("ev") }
func (k keys) eventDedupe(h string) string { return k.fleet("ev:d:" + h) }
func (k keys) secret(name string) string   { return k.fleet("secret:" + name) }
func (k keys) delivery(h string) string    { return k.prefix + ":{wh:" + h + "}" }

var moveLiveScript = goredis.NewScript(`
-- KEYS[1] live hash; ARGV[1] next SHA, ARGV[2] previous seq, ARGV[3] record JSON
-- Returns the record JSON live afterwards, or false when none is.
local cur = redis.call('HMGET', KEYS[1], 'sha', 'seq', 'rec')
local seq = tonumber(cur[2] or '0') or 0
if seq ~= tonumber(ARGV[2]) or cur[1] == ARGV[1] then return cur[3] end
redis.call('HSET', KEYS[1], 'sha', ARGV[1], 'seq', seq + 1, 'rec', ARGV[3])
return ARGV[3]
`)

// Live returns the live commit.
func (s *Store) Live(ctx context.Context) (store.CommitRecord, error) {
	var rec store.CommitRecord
	v, err := s.c.HGet(ctx, s.k.live(), "rec").Bytes()
	if errors.Is(err, goredis.Nil) {
		return rec, fmt.Errorf("%w: no live commit", store.ErrNotFound)
	}
	if err != nil {
		return rec, fmt.Errorf("redis: live: %w", err)
	}
	if err := json.Unmarshal(v, &rec); err != nil {
		return rec, fmt.Errorf("redis: live: %w", err)
	}
	return rec, nil
}

// SetLive compare-and-sets the live commit by its SHA.
func (s *Store) SetLive(ctx context.Context, next store.CommitRecord, prevSHA string) (bool, error) {
	return store.SetLiveBySHA(ctx, s, next, prevSHA)
}

// MoveLive compare-and-sets the live commit by its sequence number.
func (s *Store) MoveLive(ctx context.Context, next store.CommitRecord, prevSeq int64) (store.CommitRecord, bool, error) {
	if err := next.Validate(); err != nil {
		return store.CommitRecord{}, false, err
	}
	next.Seq = prevSeq + 1
	enc, err := store.EncodeLimited("commit record", next)
	if err != nil {
		return store.CommitRecord{}, false, err
	}
	v, err := moveLiveScript.Run(ctx, s.c, []string{s.k.live()}, next.SHA, prevSeq, enc).Text()
	var live store.CommitRecord
	switch {
	case errors.Is(err, goredis.Nil):
		return live, false, nil
	case err != nil:
		return live, false, fmt.Errorf("redis: move live to %s: %w", next.SHA, err)
	}
	if err := json.Unmarshal([]byte(v), &live); err != nil {
		return live, false, fmt.Errorf("redis: move live to %s: live record: %w", next.SHA, err)
	}
	return live, live.SHA == next.SHA, nil
}

var recordRefusedScript = goredis.NewScript(`
-- KEYS[1] refused hash, KEYS[2] order list, KEYS[3] last
-- ARGV[1] SHA, ARGV[2] refusal JSON, ARGV[3] how many SHAs to remember
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[1])
local max = tonumber(ARGV[3])
while redis.call('LLEN', KEYS[2]) > max do
  redis.call('HDEL', KEYS[1], redis.call('RPOP', KEYS[2]))
end
return 1
`)

// RecordRefused records a refused commit once per SHA.
func (s *Store) RecordRefused(ctx context.Context, r store.Refusal) (bool, error) {
	if err := r.Validate(); err != nil {
		return false, err
	}
	enc, err := store.EncodeLimited("refusal", r)
	if err != nil {
		return false, err
	}
	n, err := recordRefusedScript.Run(ctx, s.c,
		[]string{s.k.refused(), s.k.refusedOrder(), s.k.refusedLast()},
		r.SHA, enc, store.MaxRefusalsKept).Int()
	if err != nil {
		return false, fmt.Errorf("redis: record refused %s: %w", r.SHA, err)
	}
	return n == 1, nil
}

// LastRefused returns the last refused commit.
func (s *Store) LastRefused(ctx context.Context) (store.Refusal, error) {
	var r store.Refusal
	sha, err := s.c.Get(ctx, s.k.refusedLast()).Result()
	if errors.Is(err, goredis.Nil) {
		return r, fmt.Errorf("%w: no refused commit", store.ErrNotFound)
	}
	if err != nil {
		return r, fmt.Errorf("redis: last refused: %w", err)
	}
	v, err := s.c.HGet(ctx, s.k.refused(), sha).Bytes()
	if errors.Is(err, goredis.Nil) {
		return r, fmt.Errorf("%w: refused commit %s forgotten", store.ErrNotFound, sha)
	}
	if err != nil {
		return r, fmt.Errorf("redis: last refused: %w", err)
	}
	if err := json.Unmarshal(v, &r); err != nil {
		return r, fmt.Errorf("redis: last refused %s: %w", sha, err)
	}
	return r, nil
}

// putRolloutsScript applies one commit's rollouts. Records are JSON that
// both Lua (cjson) and Go read: n name, a artifact, s settings (the JSON
// text as a string, compared byte for byte), g generation, gc commit that
// started it, t0 when, c commit that last changed the record, t when,
// x stopped. It returns {0, live SHA} when commit is not live, otherwise
// {1, changes JSON}.
var putRolloutsScript = goredis.NewScript(`
-- KEYS[1] live hash, KEYS[2] rollouts hash, KEYS[3] applied hash
-- ARGV[1] commit, ARGV[2] now, ARGV[3…] name, artifact, settings triples
local commit, now = ARGV[1], ARGV[2]
local live = redis.call('HGET', KEYS[1], 'sha') or ''
if live ~= commit then return {0, live} end
if redis.call('HGET', KEYS[3], 'c') == commit then
  return {1, redis.call('HGET', KEYS[3], 'ch')}
end
local declared, changes = {}, {}
for i = 3, #ARGV, 3 do
  local name, art, set = ARGV[i], ARGV[i+1], ARGV[i+2]
  declared[name] = true
  local raw = redis.call('HGET', KEYS[2], name)
  local r, ch
  if raw then r = cjson.decode(raw) end
  if not r or r.x then
    local g = 1
    if r then g = r.g + 1 end
    r = {n = name, g = g, gc = commit, t0 = now, x = false}
    ch = {n = name, k = 'started'}
  elseif r.a ~= art then
    ch = {n = name, k = 'artifact', pa = r.a}
    r.g = r.g + 1
    r.gc, r.t0 = commit, now
  elseif r.s ~= set then
    ch = {n = name, k = 'settings'}
  end
  if ch then
    r.a, r.s, r.c, r.t = art, set, commit, now
    ch.g, ch.a = r.g, r.a
    redis.call('HSET', KEYS[2], name, cjson.encode(r))
    changes[#changes + 1] = ch
  end
end
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if not declared[all[i]] then
    local r = cjson.decode(all[i + 1])
    if not r.x then
      r.x, r.c, r.t = true, commit, now
      redis.call('HSET', KEYS[2], all[i], cjson.encode(r))
      changes[#changes + 1] = {n = r.n, k = 'stopped', g = r.g, a = r.a}
    end
  end
end
local out = '[]'
if #changes > 0 then out = cjson.encode(changes) end
redis.call('HSET', KEYS[3], 'c', commit, 'ch', out)
return {1, out}
`)

// rollout is a rollout record as the script stores it.
type rollout struct {
	Name        string `json:"n"`
	Artifact    string `json:"a"`
	Settings    string `json:"s"`
	Generation  int64  `json:"g"`
	StartCommit string `json:"gc"`
	Started     string `json:"t0"`
	Commit      string `json:"c"`
	Updated     string `json:"t"`
	Stopped     bool   `json:"x"`
}

func (r rollout) record() (store.RolloutRecord, error) {
	rec := store.RolloutRecord{
		Name: r.Name, Artifact: r.Artifact, Generation: r.Generation,
		StartCommit: r.StartCommit, Commit: r.Commit, Stopped: r.Stopped,
	}
	if r.Settings != "" {
		rec.Settings = json.RawMessage(r.Settings)
	}
	var err1, err2 error
	rec.Started, err1 = time.Parse(time.RFC3339Nano, r.Started)
	rec.Updated, err2 = time.Parse(time.RFC3339Nano, r.Updated)
	return rec, errors.Join(err1, err2)
}

// PutRollouts applies the rollouts of the live commit in one script.
func (s *Store) PutRollouts(ctx context.Context, commitSHA string, rollouts []store.RolloutRecord) ([]store.RolloutChange, error) {
	if err := store.ValidateRollouts(commitSHA, rollouts); err != nil {
		return nil, err
	}
	args := make([]any, 0, 2+3*len(rollouts))
	args = append(args, commitSHA, s.opts.Now().UTC().Format(time.RFC3339Nano))
	for _, r := range rollouts {
		args = append(args, r.Name, r.Artifact, string(r.Settings))
	}
	res, err := putRolloutsScript.Run(ctx, s.c,
		[]string{s.k.live(), s.k.rollouts(), s.k.rolloutsApplied()}, args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("redis: put rollouts %s: %w", commitSHA, err)
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("redis: put rollouts %s: script returned %d values", commitSHA, len(res))
	}
	status, _ := res[0].(int64)
	text, _ := res[1].(string)
	if status == 0 {
		return nil, fmt.Errorf("%w: %s (live is %q)", store.ErrNotLive, commitSHA, text)
	}
	var changes []store.RolloutChange
	if err := json.Unmarshal([]byte(text), &changes); err != nil {
		return nil, fmt.Errorf("redis: put rollouts %s: changes: %w", commitSHA, err)
	}
	if len(changes) == 0 {
		return nil, nil
	}
	slices.SortFunc(changes, func(a, b store.RolloutChange) int { return strings.Compare(a.Name, b.Name) })
	return changes, nil
}

// Rollouts returns every rollout, sorted by name.
func (s *Store) Rollouts(ctx context.Context) ([]store.RolloutRecord, error) {
	all, err := s.c.HGetAll(ctx, s.k.rollouts()).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: rollouts: %w", err)
	}
	out := make([]store.RolloutRecord, 0, len(all))
	for name, v := range all {
		var r rollout
		if err := json.Unmarshal([]byte(v), &r); err != nil {
			return nil, fmt.Errorf("redis: rollout %q: %w", name, err)
		}
		rec, err := r.record()
		if err != nil {
			return nil, fmt.Errorf("redis: rollout %q: %w", name, err)
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b store.RolloutRecord) int { return strings.Compare(a.Name, b.Name) })
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

var appendEventScript = goredis.NewScript(`
-- KEYS[1] stream, KEYS[2] dedupe key
-- ARGV[1] max events, ARGV[2] dedupe window (ms), ARGV[3] event JSON
local id = redis.call('GET', KEYS[2])
if id and #redis.call('XRANGE', KEYS[1], id, id) > 0 then return {0, id} end
id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], '*', 'e', ARGV[3])
redis.call('SET', KEYS[2], id, 'PX', ARGV[2])
return {1, id}
`)

// AppendEvent appends an event unless it is a duplicate. The log is a
// stream trimmed exactly (MAXLEN, not ~) to MaxEvents: events are rare
// (a few per commit or rollout transition), so exact trimming costs little
// and both stores keep the same number.
func (s *Store) AppendEvent(ctx context.Context, e store.Event) (string, bool, error) {
	if err := e.Validate(); err != nil {
		return "", false, err
	}
	if e.Time.IsZero() {
		e.Time = s.opts.Now()
	}
	enc, err := store.EncodeLimited("event", e)
	if err != nil {
		return "", false, err
	}
	res, err := appendEventScript.Run(ctx, s.c,
		[]string{s.k.events(), s.k.eventDedupe(e.DedupeKey())},
		s.opts.MaxEvents, s.opts.Dedupe.Milliseconds(), enc).Slice()
	if err != nil {
		return "", false, fmt.Errorf("redis: append event %s: %w", e.Kind, err)
	}
	if len(res) != 2 {
		return "", false, fmt.Errorf("redis: append event %s: script returned %d values", e.Kind, len(res))
	}
	added, _ := res[0].(int64)
	id, _ := res[1].(string)
	return id, added == 1, nil
}

var streamID = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// Events returns events after afterID, oldest first.
func (s *Store) Events(ctx context.Context, afterID string, limit int) ([]store.Event, error) {
	limit, err := store.PageLimit(limit)
	if err != nil {
		return nil, err
	}
	start := "-"
	if afterID != "" {
		if !streamID.MatchString(afterID) {
			return nil, fmt.Errorf("%w: event ID %q", store.ErrInvalid, afterID)
		}
		start = "(" + afterID
	}
	msgs, err := s.c.XRangeN(ctx, s.k.events(), start, "+", int64(limit)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: events: %w", err)
	}
	return decodeEvents(msgs)
}

// RecentEvents returns the newest n events, oldest first.
func (s *Store) RecentEvents(ctx context.Context, n int) ([]store.Event, error) {
	n, err := store.PageLimit(n)
	if err != nil {
		return nil, err
	}
	msgs, err := s.c.XRevRangeN(ctx, s.k.events(), "+", "-", int64(n)).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: recent events: %w", err)
	}
	slices.Reverse(msgs)
	return decodeEvents(msgs)
}

func decodeEvents(msgs []goredis.XMessage) ([]store.Event, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	out := make([]store.Event, 0, len(msgs))
	for _, m := range msgs {
		v, _ := m.Values["e"].(string)
		var e store.Event
		if err := json.Unmarshal([]byte(v), &e); err != nil {
			return nil, fmt.Errorf("redis: event %s: %w", m.ID, err)
		}
		e.ID = m.ID
		out = append(out, e)
	}
	return out, nil
}

// FirstDelivery records a delivery ID for ttl (SET NX PX) and reports
// whether it is new.
func (s *Store) FirstDelivery(ctx context.Context, id string, ttl time.Duration) (bool, error) {
	if err := store.ValidateDelivery(id, ttl); err != nil {
		return false, err
	}
	first, err := s.c.SetNX(ctx, s.k.delivery(store.DeliveryKey(id)), 1, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("redis: first delivery: %w", err)
	}
	return first, nil
}

// SharedSecret returns the named secret, creating it once (SET NX).
func (s *Store) SharedSecret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error) {
	if err := store.ValidateSecretName(name); err != nil {
		return nil, err
	}
	key := s.k.secret(name)
	secret, err := s.c.Get(ctx, key).Bytes()
	if err == nil {
		return secret, nil
	}
	if !errors.Is(err, goredis.Nil) {
		return nil, fmt.Errorf("redis: shared secret %s: %w", name, err)
	}
	fresh, err := store.GenerateSecret(name, generate)
	if err != nil {
		return nil, err
	}
	set, err := s.c.SetNX(ctx, key, fresh, 0).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: shared secret %s: %w", name, err)
	}
	if set {
		return fresh, nil
	}
	secret, err = s.c.Get(ctx, key).Bytes() // another replica won the race
	if err != nil {
		return nil, fmt.Errorf("redis: shared secret %s: %w", name, err)
	}
	return secret, nil
}
