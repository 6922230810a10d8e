package deviceapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

// tokenCache remembers the tokens verifyDirect leaves to it (tokens of
// key-only manifests, identities with values that are not strings,
// payloads of an older layout: few in a fleet), so that a device polling
// again pays for neither the HMAC nor the payload: a poll with a token
// already seen costs a base64 decode of its 43-character signature, a
// keyed 64-bit hash of the token and one map read, and allocates nothing
// (TestVerifyCachedTokenAllocatesNothing).
//
// Entries are keyed by the token's signature (32 bytes) and hold a
// maphash of the whole token under a per-process random seed, which the
// token must match: the signature binds the header and payload only for
// whoever knows the key, so the hash makes a hit mean "this very token".
// Expiry is checked on every use. The cache is split in tokenShards
// shards by the signature's first byte, each with its own lock and bound;
// a full shard drops its expired entries and then arbitrary ones (Go's
// map order) down to 7/8 of its bound, so a fleet larger than the cache
// keeps most of it warm instead of starting over. A token the cache does
// not hold costs one HMAC-SHA256 and a parse of its payload without
// encoding/json (token.go): BenchmarkVerify measured 4 µs and four
// allocations on the 2-CPU development machine, where encoding/json took
// 47 µs and 25 allocations.
//
// The tokens of one process are all signed with the same key (the API's
// key is read once): the cache does not record which key verified a token.
type tokenCache struct {
	shards [tokenShards]tokenShard
	// revoked, when set, is asked on every call whose token carries a
	// client certificate (Claims.Cert), cached or not; true refuses the
	// call (401), so a certificate revoked in Git stops working at its
	// next call, though its token has not expired.
	revoked atomic.Pointer[func(cert string) bool]
}

// maxTokens bounds the tokens cached, some 400–700 B each (compactClaims):
// enough for 1,000,000 devices polling with one token each, and their
// re-authentications, though most tokens are never cached.
const maxTokens = 1_500_000

const tokenShards = 64

type tokenShard struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]tokenEntry
	_  [40]byte // keep shards' locks on separate cache lines
}

type tokenEntry struct {
	sum uint64 // maphash.String(tokenSeed, token)
	c   *Claims
}

var tokenSeed = maphash.MakeSeed()

// errRevoked is what a call with a revoked client certificate gets.
var errRevoked = fmt.Errorf("%w: the client certificate is revoked", ErrToken)

// setRevoked installs the revocation check of client-certificate tokens
// (nil removes it). It must be cheap and allocation-free: it runs on
// every call of such a device (a map read of the live Snapshot's
// revocation list, say).
func (c *tokenCache) setRevoked(f func(cert string) bool) {
	if f == nil {
		c.revoked.Store(nil)
		return
	}
	c.revoked.Store(&f)
}

func (c *tokenCache) get(sig *[sha256.Size]byte, sum uint64, now time.Time) (Claims, bool) {
	s := &c.shards[sig[0]%tokenShards]
	s.mu.Lock()
	e, ok := s.m[*sig]
	s.mu.Unlock()
	if !ok || e.sum != sum || e.c.Expires <= now.Unix() {
		return Claims{}, false
	}
	return *e.c, true
}

func (c *tokenCache) put(sig *[sha256.Size]byte, sum uint64, cl Claims, now time.Time) {
	const bound = maxTokens / tokenShards
	s := &c.shards[sig[0]%tokenShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[[sha256.Size]byte]tokenEntry)
	}
	if len(s.m) >= bound {
		unix := now.Unix()
		for k, e := range s.m {
			if e.c.Expires <= unix {
				delete(s.m, k)
			}
		}
		for k := range s.m {
			if len(s.m) <= bound*7/8 {
				break
			}
			delete(s.m, k)
		}
	}
	s.m[*sig] = tokenEntry{sum: sum, c: &cl}
}

// len returns how many tokens the cache holds.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// verify checks a device token, and that its client certificate (if any)
// is not revoked. A token of a device that a Device manifest admits by its
// key and identity, or of a client certificate, verifies directly
// (verifyDirect); any other token comes from the cache when it verified
// before.
func (a *API) verify(key []byte, tok string) (Claims, error) {
	now := a.opts.Now()
	signed, payload, sig, err := splitToken(tok)
	if err != nil {
		return Claims{}, err
	}
	cl, ok, err := a.verifyDirect(key, signed, payload, &sig, now)
	if err != nil {
		return Claims{}, err
	}
	var sum uint64
	if !ok {
		sum = maphash.String(tokenSeed, tok)
		cl, ok = a.tokens.get(&sig, sum, now)
	}
	if !ok {
		if cl, err = verifySplit(key, signed, payload, &sig, now); err != nil {
			return Claims{}, err
		}
		cl = a.compactClaims(cl)
		a.tokens.put(&sig, sum, cl, now)
	}
	// The revocation hook of DeviceCA admission: here, after the cache,
	// so that a certificate revoked after its token was cached is
	// refused at its next call (and after the direct path, which
	// verifies certificate tokens too).
	if cl.Cert != "" {
		if f := a.tokens.revoked.Load(); f != nil && (*f)(cl.Cert) {
			return Claims{}, errRevoked
		}
	}
	return cl, nil
}

// compactClaims returns cl as the cache keeps it, holding no more memory
// than it needs: the strings of a parsed payload all point into one copy
// of the whole payload, which would stay alive with them; the issuer is
// the constant every valid token names; and the identity, when the live
// Snapshot admits the device by a manifest with the very same identity,
// is that manifest's map (the fleet keeps it anyway) instead of one more
// map per token. A cached token of a million-device fleet took about
// 860 bytes, most of them the payload and the identity map.
func (a *API) compactClaims(cl Claims) Claims {
	if cl.Issuer == tokenIssuer {
		cl.Issuer = tokenIssuer
	}
	all := make([]byte, 0, len(cl.Subject)+len(cl.ID)+len(cl.Key)+len(cl.Cert))
	all = append(append(append(append(all, cl.Subject...), cl.ID...), cl.Key...), cl.Cert...)
	s := unsafe.String(unsafe.SliceData(all), len(all)) // all is never written again
	cut := func(n int) string { part := s[:n]; s = s[n:]; return part }
	cl.Subject, cl.ID, cl.Key, cl.Cert = cut(len(cl.Subject)), cut(len(cl.ID)), cut(len(cl.Key)), cut(len(cl.Cert))
	if cl.Cert == "" && len(cl.Identity) > 0 && a.opts.Live != nil {
		if snap := a.opts.Live(); snap != nil {
			// A manifest admit returns with an identity has exactly
			// this one: admit compares them (maps.Equal for a keyed
			// manifest, the identity's key for trust on first use).
			adm := a.adm.get(snap)
			if m := adm.admit(cl.Identity, cl.Typed, cl.Key); m != nil {
				cl.admitted, cl.admittedBy = m, adm
				if len(m.Spec.Identity) > 0 {
					cl.Identity = m.Spec.Identity
				}
			}
		}
	}
	return cl
}

// lazyLog is a logger whose attributes are only encoded when a record is
// actually written: slog.Logger.With encodes them at once, which on the
// poll path cost more than the decision itself. The poll's own attributes
// (device, generation) are fields, so that a poll that logs nothing
// allocates nothing for them either; callers of Debug on the poll path
// check enabled first, as converting its arguments allocates.
type lazyLog struct {
	l        *slog.Logger
	deviceID string // "device_id", when set
	device   string // "device", when set
	gen      store.GenerationRef
	attrs    []any
}

func (l lazyLog) with(args ...any) lazyLog {
	l.attrs = append(l.attrs[:len(l.attrs):len(l.attrs)], args...)
	return l
}

// withGeneration adds "rollout" and "generation".
func (l lazyLog) withGeneration(g store.GenerationRef) lazyLog {
	l.gen = g
	return l
}

func (l lazyLog) enabled(level slog.Level) bool { return l.l.Enabled(context.Background(), level) }

func (l lazyLog) log(level slog.Level, msg string, args ...any) {
	if !l.enabled(level) {
		return
	}
	all := make([]any, 0, 8+len(l.attrs)+len(args))
	if l.deviceID != "" {
		all = append(all, "device_id", l.deviceID)
	}
	if l.device != "" {
		all = append(all, "device", l.device)
	}
	if l.gen.Rollout != "" {
		all = append(all, "rollout", l.gen.Rollout, "generation", l.gen.Generation)
	}
	all = append(append(all, l.attrs...), args...)
	l.l.Log(context.Background(), level, msg, all...)
}

func (l lazyLog) Debug(msg string, args ...any) { l.log(slog.LevelDebug, msg, args...) }
func (l lazyLog) Info(msg string, args ...any)  { l.log(slog.LevelInfo, msg, args...) }
func (l lazyLog) Warn(msg string, args ...any)  { l.log(slog.LevelWarn, msg, args...) }

// decodeNextV2Fast parses the body of POST v2 deployments/next when it has
// the layout clients send — {"device_provides":{"name":"value",…}} with
// optionally "update_control_map":true|false before or after it, no
// whitespace, plain ASCII strings without escapes, no name twice — and
// applies DecodeNextV2's checks. ok is false for any other body, which
// DecodeNextV2 then decides (TestDecodeNextV2FastMatches): every poll
// carries this body, and encoding/json's decode into a map of interfaces
// was a tenth of a poll's CPU.
//
// The strings of req are parts of body: the caller must not change body
// afterwards.
func decodeNextV2Fast(body []byte) (req NextRequest, ok bool) {
	for _, c := range body {
		if c < 0x20 || c >= 0x80 || c == '\\' {
			return NextRequest{}, false
		}
	}
	// The request's strings are parts of body, which the caller gives
	// up: a copy of a poll's body was one allocation more per poll.
	p := claimParser{s: unsafe.String(unsafe.SliceData(body), len(body))}
	if !p.lit("{") {
		return NextRequest{}, false
	}
	var provides Attributes
	control := false
	for first := true; ; first = false {
		if !first && !p.lit(",") {
			return NextRequest{}, false
		}
		var key string
		if !p.str(&key) || !p.lit(":") {
			return NextRequest{}, false
		}
		switch {
		case key == "device_provides" && provides == nil:
			if provides = p.providesObject(); provides == nil {
				return NextRequest{}, false
			}
		case key == "update_control_map" && !control:
			var b bool
			if !p.bool(&b) {
				return NextRequest{}, false
			}
			control = true
		default:
			return NextRequest{}, false
		}
		if p.lit("}") {
			break
		}
	}
	if p.i != len(p.s) || provides == nil {
		return NextRequest{}, false
	}
	r := NextRequest{DeviceType: provides["device_type"], ArtifactName: provides["artifact_name"], Provides: provides}
	if r.check() != nil {
		return NextRequest{}, false
	}
	return r, true
}

// providesObject reads {"name":"value",…} with string values only, each
// name once and valid (checkName, checkValue), at most MaxAttributes; nil
// otherwise.
func (p *claimParser) providesObject() Attributes {
	if !p.lit("{") {
		return nil
	}
	m := make(Attributes, 4)
	if p.lit("}") {
		return m
	}
	for {
		var k, v string
		if !p.str(&k) || !p.lit(":") || !p.str(&v) {
			return nil
		}
		if _, dup := m[k]; dup || len(m) == MaxAttributes || checkName(k) != nil {
			return nil
		}
		if _, err := checkValue(v); err != nil {
			return nil
		}
		m[k] = v
		if p.lit("}") {
			return m
		}
		if !p.lit(",") {
			return nil
		}
	}
}

// verifyDirect verifies a token without the cache when a Device manifest
// of the live Snapshot admits its device by key and identity, the usual
// case: then the manifest gives everything the claims' identity map
// would, and the token costs one HMAC-SHA256, a parse that reads the
// identity in place (admission.admitRaw) and one allocation (its
// strings), whether the controller saw it before or not. A cache of a
// million tokens cost some 360 bytes a token, a map miss per poll and,
// for every device's first poll, an entry that the collector then traced
// at every cycle; a first poll now costs what any other does
// (BenchmarkVerify).
//
// A client certificate's token (DeviceCA admission) verifies directly as
// well, with its identity map its own (two allocations more): cached,
// such a token held some 730 bytes, 700 MB for a million devices.
//
// ok is false, with no error, for the tokens it leaves to the cache: one
// whose identity is not all strings, one whose manifest lists no
// identity, one no manifest admits (the caller then refuses it), and any
// payload not in signToken's layout. The payload is
// parsed before the signature is checked only to choose the path: nothing
// it says is used unless the signature verifies.
func (a *API) verifyDirect(key []byte, signed, payload string, sig *[sha256.Size]byte, now time.Time) (Claims, bool, error) {
	if a.opts.Live == nil {
		return Claims{}, false, nil
	}
	snap := a.opts.Live()
	if snap == nil {
		return Claims{}, false, nil
	}
	sc := getScratch(key)
	defer scratchPool.Put(sc)
	// sc.buf: the signed part, then (after it, for the HMAC) the payload.
	sc.buf = append(sc.buf[:0], signed...)
	need := len(signed) + len(payload)*3/4 + 3
	if cap(sc.buf) < need {
		return Claims{}, false, nil // a long token: the cached path copes
	}
	dec := sc.buf[len(signed):need]
	n := decodeB64(dec, payload)
	if n < 0 {
		return Claims{}, false, nil
	}
	raw, ok := parseRawClaims(unsafe.String(unsafe.SliceData(dec), n))
	if !ok || raw.c.Typed {
		return Claims{}, false, nil
	}
	var m *schema.Device
	var adm *admission
	if raw.c.Cert == "" {
		if len(raw.identity) <= 2 {
			return Claims{}, false, nil
		}
		adm = a.adm.get(snap)
		if m = adm.admitRaw(raw.identity, raw.c.Key); m == nil || len(m.Spec.Identity) == 0 {
			return Claims{}, false, nil
		}
	}
	sc.mac.Reset()
	sc.mac.Write(sc.buf[:len(signed)])
	if !hmac.Equal(sig[:], sc.mac.Sum(sc.sum[:0])) {
		return Claims{}, true, fmt.Errorf("%w: bad signature", ErrToken)
	}
	cl := raw.c
	if err := checkClaims(&cl, now); err != nil {
		return Claims{}, true, err
	}
	// The strings point into the scratch buffer: copy them, in one piece
	// (with a certificate's identity, whose map is the token's own).
	id := ""
	if m == nil {
		id = raw.identity
	}
	all := make([]byte, 0, len(cl.Subject)+len(cl.ID)+len(cl.Key)+len(cl.Cert)+len(id))
	all = append(append(append(append(append(all, cl.Subject...), cl.ID...), cl.Key...), cl.Cert...), id...)
	s := unsafe.String(unsafe.SliceData(all), len(all)) // all is never written again
	cut := func(n int) string { part := s[:n]; s = s[n:]; return part }
	cl.Subject, cl.ID, cl.Key, cl.Cert, id = cut(len(cl.Subject)), cut(len(cl.ID)), cut(len(cl.Key)), cut(len(cl.Cert)), cut(len(id))
	cl.Issuer = tokenIssuer
	if m == nil {
		// A client certificate's token: its identity is the
		// certificate's, checked against its DeviceCA by admitToken.
		if id != "" {
			p := claimParser{s: id}
			if !p.attrs(&cl.Identity) || p.i != len(id) {
				return Claims{}, false, nil // a name twice: encoding/json decides
			}
		}
		return cl, true, nil
	}
	cl.Identity = m.Spec.Identity // equal to the token's: admitRaw compared them
	cl.admitted, cl.admittedBy = m, adm
	return cl, true, nil
}
