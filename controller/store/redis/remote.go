package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// Remote sessions (store.RemoteSessions). Keys:
//
//	PREFIX:{rc:DEVICE}     hash   c connection ID, s since, e expires (unix ns);
//	                              PEXPIRE at e, so a lapsed record is gone
//	PREFIX:{rs}:s:ID       hash   j the record's JSON as started, d device,
//	                              o operator, ri "1" when input is recorded
//	                              (set at start or by the first input),
//	                              l lease (unix ns), e end (RFC 3339),
//	                              r end reason, td/fd bytes to/from the
//	                              device, it "1" when input was truncated
//	PREFIX:{rs}:in:ID      string recorded input (APPEND)
//	PREFIX:{rs}:dev:DEVICE zset   the device's sessions not ended, scored
//	                              by lease (unix µs); pruned of run-out
//	                              leases as StartSession counts
//	PREFIX:{rs}:op:NAME    zset   the same per operator
//	PREFIX:{rs}:all        zset   every kept record by start (unix µs),
//	                              the newest Bounds.MaxRemoteSessions
//	PREFIX:rt:TOPIC        pub/sub channel (remotebus.go)
//
// Every script touches keys under the one {rs} tag, so a cluster runs it
// on one node: the limit check and the write are one atomic step for
// every replica. Scripts build a session's device, operator and input
// keys from the names the session hash holds (same tag, same slot). The
// scripts compare leases with the calling replica's clock; replicas'
// clocks should agree to well under a lease.

var _ store.RemoteSessions = (*Store)(nil)

func (k keys) conn(device string) string { return k.prefix + ":{rc:" + device + "}" }
func (k keys) rs() string                { return k.prefix + ":{rs}:" }
func (k keys) session(id string) string  { return k.rs() + "s:" + id }
func (k keys) input(id string) string    { return k.rs() + "in:" + id }
func (k keys) sessions() string          { return k.rs() + "all" }

var setConnectedScript = goredis.NewScript(`
-- KEYS[1] presence hash; ARGV[1] conn, ARGV[2] now (unix ns),
-- ARGV[3] expires (unix ns), ARGV[4] TTL (ms; 0 clears)
local cur = redis.call('HMGET', KEYS[1], 'c', 'e')
if ARGV[4] == '0' then
  if cur[1] == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if cur[1] ~= ARGV[1] or tonumber(cur[2]) <= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'c', ARGV[1], 's', ARGV[2])
end
redis.call('HSET', KEYS[1], 'e', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`)

// SetConnected records, renews or clears a device's connection.
func (s *Store) SetConnected(ctx context.Context, device, conn string, ttl time.Duration) error {
	if err := store.ValidateConnection(device, conn, ttl); err != nil {
		return err
	}
	now := s.opts.Now()
	ms := int64(0)
	if ttl > 0 {
		ms = max(1, (ttl + time.Millisecond - 1).Milliseconds())
	}
	err := setConnectedScript.Run(ctx, s.c, []string{s.k.conn(device)},
		conn, now.UnixNano(), now.Add(ttl).UnixNano(), ms).Err()
	if err != nil {
		return fmt.Errorf("redis: set connected %s: %w", device, err)
	}
	return nil
}

// Connected returns the device's connection record unless it lapsed.
func (s *Store) Connected(ctx context.Context, device string) (store.RemoteConnection, bool, error) {
	if err := store.ValidateConnection(device, "-", 0); err != nil {
		return store.RemoteConnection{}, false, err
	}
	v, err := s.c.HMGet(ctx, s.k.conn(device), "c", "s", "e").Result()
	if err != nil {
		return store.RemoteConnection{}, false, fmt.Errorf("redis: connected %s: %w", device, err)
	}
	conn, _ := v[0].(string)
	since, err1 := strconv.ParseInt(str(v[1]), 10, 64)
	expires, err2 := strconv.ParseInt(str(v[2]), 10, 64)
	if conn == "" {
		return store.RemoteConnection{}, false, nil
	}
	if err := errors.Join(err1, err2); err != nil {
		return store.RemoteConnection{}, false, fmt.Errorf("redis: connected %s: %w", device, err)
	}
	c := store.RemoteConnection{Device: device, Conn: conn, Since: time.Unix(0, since), Expires: time.Unix(0, expires)}
	if !s.opts.Now().Before(c.Expires) {
		return store.RemoteConnection{}, false, nil
	}
	return c, true, nil
}

func str(v any) string { s, _ := v.(string); return s }

// micros is t in unix µs: exact as a zset score (a double) for any time
// within ±285 years of 1970.
func micros(t time.Time) int64 { return t.UnixMicro() }

var startSessionScript = goredis.NewScript(`
-- KEYS[1] session hash, KEYS[2] device zset, KEYS[3] operator zset,
-- KEYS[4] all zset. ARGV[1] ID, ARGV[2] record JSON, ARGV[3] device,
-- ARGV[4] operator, ARGV[5] lease (ns), ARGV[6] lease (µs), ARGV[7]
-- start (µs), ARGV[8] now (µs), ARGV[9] device limit, ARGV[10] operator
-- limit, ARGV[11] records kept, ARGV[12] key prefix up to {rs}:,
-- ARGV[13] "1" when input is recorded, ARGV[14…15] bytes so far to and
-- from the device.
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[8])
local dl, ol = tonumber(ARGV[9]), tonumber(ARGV[10])
if dl > 0 and redis.call('ZCARD', KEYS[2]) >= dl then return 'device' end
if ol > 0 and redis.call('ZCARD', KEYS[3]) >= ol then return 'operator' end
redis.call('HSET', KEYS[1], 'j', ARGV[2], 'd', ARGV[3], 'o', ARGV[4], 'l', ARGV[5],
  'ri', ARGV[13], 'td', ARGV[14], 'fd', ARGV[15])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1])
local over = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[11])
if over > 0 then
  local p = ARGV[12]
  for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, over - 1)) do
    local f = redis.call('HMGET', p .. 's:' .. id, 'd', 'o')
    if f[1] then redis.call('ZREM', p .. 'dev:' .. f[1], id) end
    if f[2] then redis.call('ZREM', p .. 'op:' .. f[2], id) end
    redis.call('DEL', p .. 's:' .. id, p .. 'in:' .. id)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, over - 1)
end
return 'ok'
`)

// StartSession records a session if the limits allow it, in one script.
func (s *Store) StartSession(ctx context.Context, rs store.RemoteSession, lease time.Duration, deviceLimit, operatorLimit int) (bool, string, error) {
	if err := store.ValidateRemoteSession(rs, lease); err != nil {
		return false, "", err
	}
	rs.Lease = rs.Started.Add(lease)
	enc, err := json.Marshal(rs)
	if err != nil {
		return false, "", fmt.Errorf("redis: start session %s: %w", rs.ID, err)
	}
	recordInput := ""
	if rs.RecordInput {
		recordInput = "1"
	}
	p := s.k.rs()
	res, err := startSessionScript.Run(ctx, s.c,
		[]string{s.k.session(rs.ID), p + "dev:" + rs.Device, p + "op:" + rs.Operator, s.k.sessions()},
		rs.ID, enc, rs.Device, rs.Operator, rs.Lease.UnixNano(), micros(rs.Lease), micros(rs.Started),
		micros(s.opts.Now()), max(deviceLimit, 0), max(operatorLimit, 0), s.opts.MaxRemoteSessions, p, recordInput,
		rs.Traffic.ToDevice, rs.Traffic.FromDevice).Text()
	if err != nil {
		return false, "", fmt.Errorf("redis: start session %s: %w", rs.ID, err)
	}
	switch res {
	case "ok":
		return true, "", nil
	case "device", "operator":
		return false, res, nil
	case "exists":
		return false, "", fmt.Errorf("%w: session %s already exists", store.ErrInvalid, rs.ID)
	}
	return false, "", fmt.Errorf("redis: start session %s: script returned %q", rs.ID, res)
}

// addInput is the Lua that adds counters and recorded input (marking
// the session as recording) to the session whose hash fields f (d, o,
// l, e, ri) were read; ARGV[1] is the
// ID, ARGV[2] the key prefix, ARGV[3…6] bytes to and from the device,
// the input and the input cap; the last ARGV is the bit set of
// protocols used (store.ProtocolMask), or-ed into field pm.
const addInput = `
local function add(f)
  redis.call('HINCRBY', KEYS[1], 'td', ARGV[3])
  redis.call('HINCRBY', KEYS[1], 'fd', ARGV[4])
  local pm = tonumber(ARGV[#ARGV])
  if pm ~= 0 then
    local had = tonumber(redis.call('HGET', KEYS[1], 'pm') or '0')
    redis.call('HSET', KEYS[1], 'pm', bit.bor(had, pm))
  end
  local input = ARGV[5]
  if #input == 0 then return end
  if f[5] ~= '1' then redis.call('HSET', KEYS[1], 'ri', '1') end
  local ik = ARGV[2] .. 'in:' .. ARGV[1]
  local room = tonumber(ARGV[6]) - redis.call('STRLEN', ik)
  if #input > room then
    redis.call('HSET', KEYS[1], 'it', '1')
    if room <= 0 then return end
    input = string.sub(input, 1, room)
  end
  redis.call('APPEND', ik, input)
end
`

var touchSessionScript = goredis.NewScript(addInput + `
-- KEYS[1] session hash; ARGV[7] now (ns), ARGV[8] new lease (ns),
-- ARGV[9] new lease (µs)
local f = redis.call('HMGET', KEYS[1], 'd', 'o', 'l', 'e', 'ri')
if not f[1] then return 'missing' end
add(f)
if f[4] or tonumber(f[3]) <= tonumber(ARGV[7]) then return 'ended' end
redis.call('HSET', KEYS[1], 'l', ARGV[8])
redis.call('ZADD', ARGV[2] .. 'dev:' .. f[1], ARGV[9], ARGV[1])
redis.call('ZADD', ARGV[2] .. 'op:' .. f[2], ARGV[9], ARGV[1])
return 'ok'
`)

var endSessionScript = goredis.NewScript(addInput + `
-- KEYS[1] session hash; ARGV[7] end (RFC 3339), ARGV[8] reason
local f = redis.call('HMGET', KEYS[1], 'd', 'o', 'l', 'e', 'ri')
if not f[1] then return 'missing' end
if f[4] then return 'ok' end
add(f)
redis.call('HSET', KEYS[1], 'e', ARGV[7], 'r', ARGV[8])
redis.call('ZREM', ARGV[2] .. 'dev:' .. f[1], ARGV[1])
redis.call('ZREM', ARGV[2] .. 'op:' .. f[2], ARGV[1])
return 'ok'
`)

// TouchSession renews a session's lease and adds to its counters.
func (s *Store) TouchSession(ctx context.Context, id string, lease time.Duration, delta store.RemoteTraffic, input []byte, protocols ...string) error {
	if err := store.ValidateSessionUpdate(id, lease, time.Time{}, "", delta, false, protocols...); err != nil {
		return err
	}
	pm, _ := store.ProtocolMask(protocols) // validated above
	now := s.opts.Now()
	next := now.Add(lease)
	res, err := touchSessionScript.Run(ctx, s.c, []string{s.k.session(id)},
		id, s.k.rs(), delta.ToDevice, delta.FromDevice, input, store.MaxRecordedInput,
		now.UnixNano(), next.UnixNano(), micros(next), pm).Text()
	return sessionResult("touch", id, res, err)
}

// EndSession ends a session once.
func (s *Store) EndSession(ctx context.Context, id string, end time.Time, reason string, delta store.RemoteTraffic, input []byte, protocols ...string) error {
	if err := store.ValidateSessionUpdate(id, 0, end, reason, delta, true, protocols...); err != nil {
		return err
	}
	pm, _ := store.ProtocolMask(protocols) // validated above
	endText, err := end.MarshalText()
	if err != nil {
		return fmt.Errorf("%w: session %s: end time %v: %v", store.ErrInvalid, id, end, err)
	}
	res, err := endSessionScript.Run(ctx, s.c, []string{s.k.session(id)},
		id, s.k.rs(), delta.ToDevice, delta.FromDevice, input, store.MaxRecordedInput,
		endText, reason, pm).Text()
	return sessionResult("end", id, res, err)
}

func sessionResult(what, id, res string, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("redis: %s session %s: %w", what, id, err)
	case res == "ok":
		return nil
	case res == "missing":
		return fmt.Errorf("%w: remote session %s", store.ErrNotFound, id)
	case res == "ended":
		return fmt.Errorf("session %s: %w", id, store.ErrSessionEnded)
	}
	return fmt.Errorf("redis: %s session %s: script returned %q", what, id, res)
}

// sessionFields are the hash fields a record is read from, in order.
var sessionFields = []string{"j", "l", "e", "r", "td", "fd", "it", "ri", "pm"}

// decodeSession builds a record from HMGET sessionFields; ok is false
// when the hash is gone.
func decodeSession(id string, v []any) (store.RemoteSession, bool, error) {
	var rec store.RemoteSession
	j, ok := v[0].(string)
	if !ok {
		return rec, false, nil
	}
	if err := json.Unmarshal([]byte(j), &rec); err != nil {
		return rec, false, fmt.Errorf("redis: session %s: %w", id, err)
	}
	lease, err1 := strconv.ParseInt(str(v[1]), 10, 64)
	td, err2 := strconv.ParseInt(str(v[4]), 10, 64)
	fd, err3 := strconv.ParseInt(str(v[5]), 10, 64)
	var err4 error
	if e := str(v[2]); e != "" {
		err4 = rec.Ended.UnmarshalText([]byte(e))
	}
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return rec, false, fmt.Errorf("redis: session %s: %w", id, err)
	}
	rec.Lease = time.Unix(0, lease)
	rec.Reason = str(v[3])
	rec.Traffic = store.RemoteTraffic{ToDevice: td, FromDevice: fd}
	rec.InputTruncated = str(v[6]) == "1"
	rec.RecordInput = str(v[7]) == "1"
	if pm, err := strconv.ParseUint(str(v[8]), 10, 8); err == nil {
		rec.Protocols = store.MergeProtocols(rec.Protocols, store.ProtocolNames(uint(pm)))
	}
	return rec, true, nil
}

// Session returns one session record.
func (s *Store) Session(ctx context.Context, id string) (store.RemoteSession, error) {
	pipe := s.c.Pipeline()
	fields := pipe.HMGet(ctx, s.k.session(id), sessionFields...)
	input := pipe.Get(ctx, s.k.input(id))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return store.RemoteSession{}, fmt.Errorf("redis: session %s: %w", id, err)
	}
	rec, ok, err := decodeSession(id, fields.Val())
	if err != nil {
		return rec, err
	}
	if !ok {
		return rec, fmt.Errorf("%w: remote session %s", store.ErrNotFound, id)
	}
	rec.Input = input.Val()
	return rec, nil
}

// sessionsPage is how many IDs Sessions reads per round trip.
const sessionsPage = 200

// Sessions lists session records, newest start first. It pages through
// the start index by rank; a session started meanwhile shifts the ranks
// down, so IDs already seen are skipped.
func (s *Store) Sessions(ctx context.Context, f store.RemoteSessionFilter, limit int) ([]store.RemoteSession, error) {
	limit, err := store.PageLimit(limit)
	if err != nil {
		return nil, err
	}
	now := s.opts.Now()
	var out []store.RemoteSession
	seen := map[string]bool{}
	for from := int64(0); len(out) < limit; from += sessionsPage {
		ids, err := s.c.ZRevRange(ctx, s.k.sessions(), from, from+sessionsPage-1).Result()
		if err != nil {
			return nil, fmt.Errorf("redis: sessions: %w", err)
		}
		pipe := s.c.Pipeline()
		cmds := make([]*goredis.SliceCmd, len(ids))
		for i, id := range ids {
			cmds[i] = pipe.HMGet(ctx, s.k.session(id), sessionFields...)
		}
		if len(ids) > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return nil, fmt.Errorf("redis: sessions: %w", err)
			}
		}
		var page []store.RemoteSession
		for i, id := range ids {
			rec, ok, err := decodeSession(id, cmds[i].Val())
			if err != nil {
				return nil, err
			}
			if !ok || seen[id] || !f.Matches(rec, now) {
				continue
			}
			seen[id] = true
			page = append(page, rec)
			if len(out)+len(page) == limit {
				break
			}
		}
		if err := s.readInputs(ctx, page); err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(ids) < sessionsPage {
			break
		}
	}
	return out, nil
}

// readInputs fills in the recorded input of the sessions that record it.
func (s *Store) readInputs(ctx context.Context, recs []store.RemoteSession) error {
	pipe := s.c.Pipeline()
	cmds := map[int]*goredis.StringCmd{}
	for i, r := range recs {
		if r.RecordInput {
			cmds[i] = pipe.Get(ctx, s.k.input(r.ID))
		}
	}
	if len(cmds) == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, goredis.Nil) {
		return fmt.Errorf("redis: sessions' input: %w", err)
	}
	for i, c := range cmds {
		recs[i].Input = c.Val()
	}
	return nil
}
