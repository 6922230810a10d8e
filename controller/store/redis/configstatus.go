package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gitfleet/gitfleet/controller/store"
	goredis "github.com/redis/go-redis/v9"
)

// A device's configuration report is one hash under its own tag,
// gf:{c:NAME} (fields in package store's key layout), so the devices of a
// fleet spread over a cluster. SetConfigStatus is one script over that
// hash, which makes the comparison with the recorded report, the choice of
// Since and the write one atomic step: replicas recording reports of the
// same device at once never interleave, and the last script to run wins.
func (k keys) configStatus(device string) string { return k.prefix + ":{c:" + device + "}" }

// configFields are the hash's fields in the order the script takes its
// arguments and HMGET returns them.
var configFields = []string{"d", "s", "sc", "x", "o", "fd", "v", "r", "t"}

// hmgetConfig is HMGET's arguments for configFields with room for the key,
// boxed once: a fleet read builds one command per device.
var hmgetConfig = func() []any {
	args := []any{"hmget", ""}
	for _, f := range configFields {
		args = append(args, f)
	}
	return args
}()

var setConfigStatusScript = goredis.NewScript(`
-- KEYS[1] the device's config status hash
-- ARGV[1…7] digest, state, script, exit code, output, file digest, via;
-- ARGV[8] reported (unix ns). Returns 1 if any of ARGV[1…7] differs from
-- what was recorded (or nothing was), else 0.
-- a <= b for decimal integers, exactly (tonumber rounds unix ns to
-- doubles): Go writes no leading zeros.
local function le(a, b)
  if a:sub(1, 1) == '-' or b:sub(1, 1) == '-' then return tonumber(a) <= tonumber(b) end
  if #a ~= #b then return #a < #b end
  return a <= b
end
local old = redis.call('HMGET', KEYS[1], 'd', 's', 'sc', 'x', 'o', 'fd', 'v', 't')
local changed = 0
for i = 1, 7 do
  if old[i] ~= ARGV[i] then changed = 1 end
end
local since = ARGV[8]
if old[1] == ARGV[1] and old[2] == ARGV[2] and old[8] and le(old[8], ARGV[8]) then
  since = old[8]
end
redis.call('HSET', KEYS[1], 'd', ARGV[1], 's', ARGV[2], 'sc', ARGV[3], 'x', ARGV[4],
  'o', ARGV[5], 'fd', ARGV[6], 'v', ARGV[7], 'r', ARGV[8], 't', since)
return changed
`)

// SetConfigStatus records a device's configuration report in one script.
func (s *Store) SetConfigStatus(ctx context.Context, st store.ConfigStatus) (bool, error) {
	if err := store.ValidateConfigStatus(st); err != nil {
		return false, err
	}
	st = validUTF8(st)
	if st.Reported.IsZero() {
		st.Reported = s.opts.Now()
	}
	n, err := setConfigStatusScript.Run(ctx, s.c, []string{s.k.configStatus(st.Device)},
		st.Digest, st.State, st.Script, st.ExitCode, st.Output, st.FileDigest, st.Via,
		st.Reported.UnixNano()).Int()
	if err != nil {
		return false, fmt.Errorf("redis: set config status of device %s: %w", st.Device, err)
	}
	return n == 1, nil
}

// ConfigStatusOf reads devices' reports, pipelining one HMGET per device,
// store.MaxPage devices per round trip.
func (s *Store) ConfigStatusOf(ctx context.Context, devices []string) (map[string]store.ConfigStatus, error) {
	out := make(map[string]store.ConfigStatus, len(devices))
	for page := range slices.Chunk(devices, store.MaxPage) {
		cmds := make([]*goredis.Cmd, len(page))
		args := make([]any, len(page)*len(hmgetConfig)) // one allocation for the page's arguments
		_, err := s.c.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, d := range page {
				a := args[i*len(hmgetConfig) : (i+1)*len(hmgetConfig)]
				copy(a, hmgetConfig)
				a[1] = s.k.configStatus(d)
				cmds[i] = p.Do(ctx, a...)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("redis: config status of %d devices: %w", len(page), err)
		}
		for i, d := range page {
			v, _ := cmds[i].Val().([]any)
			st, ok, err := decodeConfigStatus(d, v)
			if err != nil {
				return nil, err
			}
			if ok {
				out[d] = st
			}
		}
	}
	return out, nil
}

// decodeConfigStatus reads HMGET's answer for configFields; ok is false
// when the device has no record.
func decodeConfigStatus(device string, v []any) (st store.ConfigStatus, ok bool, err error) {
	if len(v) != len(configFields) {
		return st, false, fmt.Errorf("redis: config status of device %s: %d fields read, want %d", device, len(v), len(configFields))
	}
	f := make([]string, len(v))
	for i, x := range v {
		f[i], _ = x.(string) // nil (absent field) reads as ""
	}
	if v[0] == nil {
		return st, false, nil
	}
	var errs []error
	num := func(name, text string) int64 {
		if text == "" {
			return 0
		}
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("field %s = %q is not an integer", name, text))
		}
		return n
	}
	st = store.ConfigStatus{Device: device, Digest: f[0], State: f[1], Script: f[2],
		ExitCode: int(num("x", f[3])), Output: f[4], FileDigest: f[5], Via: f[6],
		Reported: store.FromNanos(num("r", f[7])), Since: store.FromNanos(num("t", f[8]))}
	if err := errors.Join(errs...); err != nil {
		return st, false, fmt.Errorf("redis: config status of device %s: %w", device, err)
	}
	return st, true, nil
}

// validUTF8 replaces each run of invalid UTF-8 in a report's strings with
// U+FFFD, as the embedded store does before its JSON encoding (which would
// otherwise replace them its own way), so both stores record the same text
// and a report sent twice compares equal.
func validUTF8(st store.ConfigStatus) store.ConfigStatus {
	for _, p := range []*string{&st.Digest, &st.Script, &st.Output, &st.FileDigest, &st.Via} {
		*p = strings.ToValidUTF8(*p, "\uFFFD")
	}
	return st
}
