package deviceapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
)

func TestTokenCacheHonoursExpiry(t *testing.T) {
	var c tokenCache
	now := time.Unix(1_800_000_000, 0)
	sig := [32]byte{1, 2, 3}
	c.put(&sig, 42, Claims{Subject: "d", Expires: now.Unix() + 60}, now)
	if _, ok := c.get(&sig, 42, now); !ok {
		t.Fatal("fresh token not cached")
	}
	if _, ok := c.get(&sig, 42, now.Add(61*time.Second)); ok {
		t.Fatal("expired token served from the cache")
	}
	if _, ok := c.get(&sig, 43, now); ok {
		t.Fatal("a token with the same signature but another hash served from the cache")
	}
	other := [32]byte{9}
	if _, ok := c.get(&other, 42, now); ok {
		t.Fatal("unknown token served from the cache")
	}
}

// A full shard keeps 7/8 of its bound, expired entries first, and takes
// the new token.
func TestTokenCacheEvictsWithinShard(t *testing.T) {
	var c tokenCache
	now := time.Unix(1_800_000_000, 0)
	const bound = maxTokens / tokenShards
	var sig [32]byte // every key in shard 0
	for i := range bound {
		sig[1], sig[2], sig[3] = byte(i), byte(i>>8), byte(i>>16)
		exp := now.Unix() + 60
		if i < 100 {
			exp = now.Unix() - 1
		}
		c.put(&sig, 1, Claims{Subject: "d", Expires: exp}, now)
	}
	if n := c.len(); n != bound {
		t.Fatalf("%d cached, want %d", n, bound)
	}
	last := sig
	sig = [32]byte{0, 0xff, 0xff, 0xff}
	c.put(&sig, 1, Claims{Subject: "new", Expires: now.Unix() + 60}, now)
	if n := c.len(); n > bound*7/8+1 || n < bound/2 {
		t.Fatalf("%d cached after eviction (bound %d)", n, bound)
	}
	if cl, ok := c.get(&sig, 1, now); !ok || cl.Subject != "new" {
		t.Fatal("the new token is not cached")
	}
	s := &c.shards[0]
	for _, e := range s.m {
		if e.c.Expires <= now.Unix() {
			t.Fatal("an expired entry survived the eviction")
		}
	}
	_ = last
}

func newTokenAPI(now time.Time) *API {
	return &API{opts: Options{Now: func() time.Time { return now }}}
}

// The poll path's token check: a token already seen costs no allocation
// (and so no JSON decode); one not seen verifies with a handful.
func TestVerifyCachedTokenAllocatesNothing(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	now := time.Unix(1_800_000_000, 0)
	claims := Claims{Subject: strings.Repeat("ab", 32), ID: "0123456789abcdef0123456789abcdef", IssuedAt: now.Unix(),
		Expires: now.Add(time.Hour).Unix(), Issuer: tokenIssuer, Device: true,
		Identity: Attributes{"mac": "02:00:00:00:00:01", "serial": "SN-000001"}, Key: strings.Repeat("cd", 32)}
	tok, err := signToken(key, claims)
	if err != nil {
		t.Fatal(err)
	}
	a := newTokenAPI(now)
	got, err := a.verify(key, tok)
	if err != nil || !reflect.DeepEqual(got, claims) {
		t.Fatalf("first verify: %+v, %v", got, err)
	}
	if a.tokens.len() != 1 {
		t.Fatal("verified token not cached")
	}
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := a.verify(key, tok); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a cached token costs %v allocations per check, want 0", n)
	}
	// With a revocation hook (client-certificate tokens) as well.
	claims.Cert = "ca/01"
	ctok, _ := signToken(key, claims)
	revoked := map[string]bool{}
	a.tokens.setRevoked(func(cert string) bool { return revoked[cert] })
	if _, err := a.verify(key, ctok); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := a.verify(key, ctok); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a cached certificate token costs %v allocations per check, want 0", n)
	}
	// A miss: the payload (one string), the identity map, the cache
	// entry; no encoding/json.
	if n := testing.AllocsPerRun(200, func() {
		if _, err := verifyToken(key, tok, now); err != nil {
			t.Fatal(err)
		}
	}); n > 4 {
		t.Errorf("verifying an unseen token costs %v allocations, want at most 4", n)
	}
}

// A revoked certificate is refused at its next call, cached or not, and
// only that one.
func TestVerifyRefusesRevokedCertificate(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	now := time.Unix(1_800_000_000, 0)
	mk := func(cert string) string {
		tok, err := signToken(key, Claims{Subject: "d-" + cert, IssuedAt: now.Unix(), Expires: now.Unix() + 60,
			Issuer: tokenIssuer, Device: true, Key: "k", Cert: cert})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	a := newTokenAPI(now)
	t1, t2, plain := mk("ca/01"), mk("ca/02"), mk("")
	for _, tok := range []string{t1, t2, plain} {
		if _, err := a.verify(key, tok); err != nil {
			t.Fatal(err)
		}
	}
	revoked := map[string]bool{"ca/01": true}
	a.tokens.setRevoked(func(cert string) bool { return revoked[cert] })
	if _, err := a.verify(key, t1); !errors.Is(err, ErrToken) {
		t.Fatalf("revoked certificate's cached token: %v", err)
	}
	if _, err := a.verify(key, t2); err != nil {
		t.Fatalf("another certificate: %v", err)
	}
	if _, err := a.verify(key, plain); err != nil {
		t.Fatalf("a token without a certificate: %v", err)
	}
	a.tokens.setRevoked(nil)
	if _, err := a.verify(key, t1); err != nil {
		t.Fatalf("hook removed: %v", err)
	}
}

// A cached token's signature with another payload is not a hit: the
// token is verified, and refused.
func TestVerifyCacheBindsWholeToken(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	now := time.Unix(1_800_000_000, 0)
	c := Claims{Subject: "d", IssuedAt: now.Unix(), Expires: now.Unix() + 60, Issuer: tokenIssuer, Device: true, Key: "k"}
	tok, _ := signToken(key, c)
	a := newTokenAPI(now)
	if _, err := a.verify(key, tok); err != nil {
		t.Fatal(err)
	}
	c.Subject = "other"
	p, _ := json.Marshal(c)
	parts := strings.Split(tok, ".")
	forged := parts[0] + "." + b64(p) + "." + parts[2]
	if cl, err := a.verify(key, forged); err == nil {
		t.Fatalf("forged payload with a cached signature accepted as %+v", cl)
	}
}

// parseClaims reads what signToken writes exactly as encoding/json does,
// and leaves what it does not read to encoding/json.
func TestParseClaimsMatchesEncodingJSON(t *testing.T) {
	base := Claims{Subject: "dev", ID: "j", IssuedAt: 1_800_000_000, Expires: 1_800_003_600, Issuer: tokenIssuer, Device: true, Key: "ab"}
	with := func(f func(*Claims)) Claims { c := base; f(&c); return c }
	for _, tc := range []struct {
		name string
		c    Claims
		fast bool
	}{
		{"no identity", base, true},
		{"empty identity", with(func(c *Claims) { c.Identity = Attributes{} }), true},
		{"identity", with(func(c *Claims) { c.Identity = Attributes{"z": "1", "a": "2", "mac": "02:00"} }), true},
		{"typed", with(func(c *Claims) { c.Typed = true; c.Identity = Attributes{"a": "b"} }), true},
		{"certificate", with(func(c *Claims) { c.Cert = "factory-ca/7f" }), true},
		{"not a device", with(func(c *Claims) { c.Device = false }), true},
		{"negative times", with(func(c *Claims) { c.IssuedAt = -5; c.Expires = 0 }), true},
		{"unicode", with(func(c *Claims) { c.Identity = Attributes{"ort": "Zürich"} }), true},
		{"escaped quote", with(func(c *Claims) { c.Identity = Attributes{"a": `x"y`} }), false},
		{"html escaped", with(func(c *Claims) { c.Subject = "<d&>" }), false},
		{"newline", with(func(c *Claims) { c.Identity = Attributes{"a": "x\ny"} }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload, err := json.Marshal(tc.c)
			if err != nil {
				t.Fatal(err)
			}
			var want Claims
			if err := json.Unmarshal(payload, &want); err != nil {
				t.Fatal(err)
			}
			got, ok := parseClaims(payload)
			if ok != tc.fast {
				t.Fatalf("parseClaims(%s) ok = %v, want %v", payload, ok, tc.fast)
			}
			if ok && !reflect.DeepEqual(got, want) {
				t.Fatalf("parseClaims(%s) = %+v, encoding/json %+v", payload, got, want)
			}
			// Either way verifyToken returns encoding/json's reading.
			key := bytes.Repeat([]byte{1}, 32)
			tok, _ := signToken(key, tc.c)
			v, err := verifyToken(key, tok, time.Unix(1_800_000_001, 0))
			if tc.c.Device && tc.c.Expires > 1_800_000_001 && (err != nil || !reflect.DeepEqual(v, want)) {
				t.Fatalf("verifyToken = %+v, %v; want %+v", v, err, want)
			}
		})
	}
	for _, bad := range []string{``, `{}`, `{"sub":"a"}`, `{"sub":"a","jti":"j","iat":01,"exp":2,"iss":"gitfleet","mender.device":true,"gf.id":null,"gf.key":"k"}`,
		`{"sub":"a","jti":"j","iat":1,"exp":2,"iss":"gitfleet","mender.device":true,"gf.id":null,"gf.key":"k"} `,
		`{"sub":"a","jti":"j","iat":1,"exp":2,"iss":"gitfleet","mender.device":true,"gf.id":{"a":"1","a":"2"},"gf.key":"k"}`,
		`{"sub":"a","jti":"j","iat":1,"exp":2,"iss":"gitfleet","mender.device":true,"gf.id":{"a":1},"gf.key":"k"}`,
		`{"sub":"a","jti":"j","iat":1,"exp":2,"iss":"gitfleet","mender.device":true,"gf.id":null,"gf.key":"k","x":1}`,
		`{"sub":"a","jti":"j","iat":1234567890123456789,"exp":2,"iss":"gitfleet","mender.device":true,"gf.id":null,"gf.key":"k"}`} {
		if c, ok := parseClaims([]byte(bad)); ok {
			t.Errorf("parseClaims(%s) = %+v, want it left to encoding/json", bad, c)
		}
	}
}

func TestDecodeB64MatchesEncoding(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 70 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		s := base64.RawURLEncoding.EncodeToString(b)
		dst := make([]byte, len(s)*3/4)
		if k := decodeB64(dst, s); k != n || !bytes.Equal(dst[:k], b) {
			t.Fatalf("decodeB64(%q) = %d %x, want %x", s, k, dst[:max(k, 0)], b)
		}
	}
	for _, s := range []string{"a", "abcde", "ab=c", "ab+c", "ab/c", "a.bc", "ab c"} {
		want, werr := base64.RawURLEncoding.DecodeString(s)
		dst := make([]byte, len(s))
		k := decodeB64(dst, s)
		if (k < 0) != (werr != nil) || k >= 0 && !bytes.Equal(dst[:k], want) {
			t.Errorf("decodeB64(%q) = %d; encoding/base64: %x, %v", s, k, want, werr)
		}
	}
	// Stricter than encoding/base64, which skips line breaks.
	if k := decodeB64(make([]byte, 8), "ab\nc"); k >= 0 {
		t.Errorf("decodeB64 accepted a line break")
	}
}

func TestLazyLogWritesOnlyEnabledLevels(t *testing.T) {
	var buf bytes.Buffer
	l := lazyLog{l: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), attrs: []any{"device", "d1"}}
	l2 := l.with("rollout", "r")
	l.with("unrelated", "x") // must not leak into l2
	l2.Debug("hidden")
	l2.Info("shown", "phase", 1)
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "device=d1 rollout=r phase=1") || strings.Contains(out, "unrelated") {
		t.Fatalf("log output %q", out)
	}
	// The poll's logger: its fields cost nothing until a record is
	// written, and are all written then.
	buf.Reset()
	g := store.GenerationRef{Rollout: "fleet", Generation: 3}
	if n := testing.AllocsPerRun(100, func() {
		p := lazyLog{l: l.l, deviceID: "id1", device: "d1"}.withGeneration(g)
		if p.enabled(slog.LevelDebug) {
			p.Debug("hidden", "until", time.Now())
		}
	}); n != 0 {
		t.Errorf("a poll's logger that writes nothing costs %v allocations", n)
	}
	lazyLog{l: l.l, deviceID: "id1", device: "d1"}.withGeneration(g).Info("shown", "phase", 2)
	if out := buf.String(); !strings.Contains(out, "device_id=id1 device=d1 rollout=fleet generation=3 phase=2") {
		t.Fatalf("log output %q", out)
	}
}

// The one-pass decoder of next requests flattens values exactly as flatten
// does for raw JSON (inventory uses that).
func TestFlattenValueMatchesFlatten(t *testing.T) {
	for _, v := range []string{`"x"`, `"a,b"`, `12`, `1.50`, `-0`, `1e3`, `true`, `false`, `null`,
		`["a", 1, true, null]`, `[]`, `{"a":1}`, `[["x"]]`, `[{"a":1}]`, `"\u00e9\n"`} {
		want, werr := flatten(json.RawMessage(v))
		dec := json.NewDecoder(strings.NewReader(v))
		dec.UseNumber()
		var x any
		if err := dec.Decode(&x); err != nil {
			t.Fatal(err)
		}
		got, gerr := flattenValue(x)
		if got != want || (werr == nil) != (gerr == nil) {
			t.Errorf("%s: flattenValue = %q, %v; flatten = %q, %v", v, got, gerr, want, werr)
		}
	}
	for _, body := range []string{`{"device_provides":{"device_type":"x"}}}`, `{"device_provides":null}`, `{"device_provides":{"device_type":"x"}} x`} {
		if _, err := DecodeNextV2([]byte(body)); err == nil {
			t.Errorf("DecodeNextV2(%s) accepted", body)
		}
	}
}

// BenchmarkVerify reports the token check's cost for a cached token, an
// unseen one, and the heap a cached token holds (B/token, docs/scale.md).
func BenchmarkVerify(b *testing.B) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	now := time.Unix(1_800_000_000, 0)
	mint := func(i int) string {
		tok, err := signToken(key, Claims{Subject: fmt.Sprintf("%064x", i), ID: fmt.Sprintf("%032x", i), IssuedAt: now.Unix(),
			Expires: now.Add(time.Hour).Unix(), Issuer: tokenIssuer, Device: true,
			Identity: Attributes{"mac": fmt.Sprintf("02:00:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i))},
			Key:      fmt.Sprintf("%064x", i*7)})
		if err != nil {
			b.Fatal(err)
		}
		return tok
	}
	const n = 100_000
	toks := make([]string, n)
	for i := range toks {
		toks[i] = mint(i)
	}
	b.Run("cached", func(b *testing.B) {
		a := newTokenAPI(now)
		for _, tok := range toks {
			if _, err := a.verify(key, tok); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			if _, err := a.verify(key, toks[i%n]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("manifest", func(b *testing.B) {
		// Tokens of devices their manifests admit (by key and identity):
		// verified directly, no cache, whether seen before or not.
		f := &schema.Fleet{Devices: make([]schema.Device, n)}
		for i := range f.Devices {
			d := &f.Devices[i]
			d.Name = fmt.Sprintf("d%07d", i)
			d.Spec.Identity = map[string]string{"mac": fmt.Sprintf("02:00:00:%02x:%02x:%02x", byte(i>>16), byte(i>>8), byte(i))}
			d.Spec.PublicKeySHA256 = fmt.Sprintf("%064x", i*7)
		}
		snap := &reconcile.Snapshot{Fleet: f}
		a := newTokenAPI(now)
		a.opts.Live = func() *reconcile.Snapshot { return snap }
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			cl, err := a.verify(key, toks[i%n])
			if err != nil || cl.admitted == nil {
				b.Fatal(err, cl.admitted)
			}
		}
	})
	b.Run("unseen", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := verifyToken(key, toks[i%n], now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			a := newTokenAPI(now)
			for _, tok := range toks {
				if _, err := a.verify(key, tok); err != nil {
					b.Fatal(err)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/token")
			runtime.KeepAlive(a)
		}
	})
}

// nextV2Bodies are bodies of POST v2 deployments/next, the usual and the
// odd; the first ones are what clients send and must take the fast path.
var nextV2Bodies = []struct {
	body string
	fast bool
}{
	{`{"device_provides":{"artifact_name":"app-1","device_type":"sim"}}`, true},
	{`{"device_provides":{"device_type":"raspberrypi4","artifact_name":"release-1","rootfs-image.version":"1.2"},"update_control_map":false}`, true},
	{`{"update_control_map":true,"device_provides":{"device_type":"x","artifact_name":""}}`, true},
	{`{"device_provides":{"device_type":"x","a":""}}`, true},
	{`{"device_provides":{"artifact_name":"a"}}`, false},                 // no device_type: the error is DecodeNextV2's
	{`{"device_provides":{}}`, false},                                    // the same
	{`{"device_provides":null}`, false},                                  // no provides
	{`{"update_control_map":false}`, false},                              // the same
	{`{}`, false},                                                        //
	{`{"device_provides":{"device_type":"x"},"other":1}`, false},         // unknown key: ignored by encoding/json
	{`{"Device_Provides":{"device_type":"x"}}`, false},                   // encoding/json matches keys case-insensitively
	{`{"device_provides":{"device_type":"x","device_type":"y"}}`, false}, // the last wins in encoding/json
	{`{"device_provides":{"device_type":"x"},"device_provides":{"device_type":"y"}}`, false},
	{`{"device_provides":{"device_type":"x","n":1}}`, false},                      // a number
	{`{"device_provides":{"device_type":"x","l":["a","b"]}}`, false},              // a list
	{`{"device_provides":{"device_type":"x","b":true,"z":null}}`, false},          // a boolean, null
	{`{"device_provides":{"device_type":"x\u0041"}}`, false},                      // an escape
	{"{\"device_provides\":{\"device_type\":\"Z\xc3\xbcrich\"}}", false},          // not ASCII
	{"{\"device_provides\":{\"device_type\":\"\xff\"}}", false},                   // not UTF-8: encoding/json replaces it
	{`{ "device_provides": {"device_type": "x"} }`, false},                        // whitespace
	{`{"device_provides":{"device_type":"x"}} `, false},                           // trailing space
	{`{"device_provides":{"device_type":"x"}}{}`, false},                          // trailing data
	{`{"device_provides":{"device_type":"x"},"update_control_map":"yes"}`, false}, // not a boolean
	{`{"device_provides":{"device_type":"x"},"update_control_map":true,"update_control_map":false}`, false},
	{`{"device_provides":{"device_type":"x",}}`, false},
	{`{"device_provides":{"device_type":"x"}`, false},
	{`{"device_provides":{"":"x","device_type":"x"}}`, false}, // an empty name
	{`{"device_provides":{"device_type":"` + strings.Repeat("v", maxValueBytes+1) + `"}}`, false},
	{`{"device_provides":{"device_type":"x","` + strings.Repeat("n", maxNameBytes+1) + `":"v"}}`, false},
}

// The fast decoder of deployments/next bodies agrees with DecodeNextV2
// whenever it answers, and answers for what clients send.
func TestDecodeNextV2FastMatches(t *testing.T) {
	many := `{"device_provides":{"device_type":"x"`
	for i := range MaxAttributes {
		many += fmt.Sprintf(`,"a%d":"v"`, i)
	}
	bodies := append(nextV2Bodies[:len(nextV2Bodies):len(nextV2Bodies)],
		struct {
			body string
			fast bool
		}{many + "}}", false}) // MaxAttributes+1 attributes
	for _, tc := range bodies {
		got, ok := decodeNextV2Fast([]byte(tc.body))
		if ok != tc.fast {
			t.Errorf("decodeNextV2Fast(%.80s) ok = %v, want %v", tc.body, ok, tc.fast)
		}
		checkNextV2Fast(t, []byte(tc.body), got, ok)
	}
}

func checkNextV2Fast(t *testing.T, body []byte, got NextRequest, ok bool) {
	t.Helper()
	if !ok {
		return
	}
	want, err := DecodeNextV2(body)
	if err != nil {
		t.Fatalf("decodeNextV2Fast(%q) = %+v, DecodeNextV2 refuses it: %v", body, got, err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeNextV2Fast(%q) = %+v, DecodeNextV2 %+v", body, got, want)
	}
}

func FuzzDecodeNextV2Fast(f *testing.F) {
	for _, tc := range nextV2Bodies {
		f.Add([]byte(tc.body))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := decodeNextV2Fast(body)
		checkNextV2Fast(t, body, got, ok)
	})
}

// A cached token holds little memory: its strings in one small copy
// (not the whole payload) and, for a device a manifest admits with the
// same identity, that manifest's identity map instead of its own.
// A token of a device that a manifest admits by key and identity is
// verified directly, first poll or not: one allocation (its strings), no
// cache entry (so no memory per token), the manifest's identity map.
func TestManifestTokensVerifyDirectly(t *testing.T) {
	const n = 20_000
	key := bytes.Repeat([]byte{0x5a}, 32)
	now := time.Unix(1_800_000_000, 0)
	f := &schema.Fleet{Devices: make([]schema.Device, n)}
	toks := make([]string, n)
	for i := range n {
		d := &f.Devices[i]
		d.Name = fmt.Sprintf("d%07d", i)
		d.Spec.Identity = map[string]string{"mac": fmt.Sprintf("02:00:00:%02x:%02x:%02x", i>>16&0xff, i>>8&0xff, i&0xff), "serial": fmt.Sprint(i)}
		d.Spec.PublicKeySHA256 = fmt.Sprintf("%064x", i)
		var err error
		toks[i], err = signToken(key, Claims{Subject: fmt.Sprintf("%032x", i), ID: fmt.Sprintf("%032x", i+1), IssuedAt: now.Unix(),
			Expires: now.Add(time.Hour).Unix(), Issuer: tokenIssuer, Device: true, Identity: Attributes(maps.Clone(d.Spec.Identity)),
			Key: d.Spec.PublicKeySHA256})
		if err != nil {
			t.Fatal(err)
		}
	}
	snap := &reconcile.Snapshot{Fleet: f}
	a := newTokenAPI(now)
	a.opts.Live = func() *reconcile.Snapshot { return snap }
	a.adm.get(snap) // the admission index is the fleet's, not the tokens'
	before := heapInUse()
	kept := make([]Claims, 0, 8)
	for i := range n {
		cl, err := a.verify(key, toks[i])
		if err != nil {
			t.Fatal(err)
		}
		if i%(n/8) == 0 {
			kept = append(kept, cl)
		}
	}
	per := float64(heapInUse()-before) / n
	t.Logf("%.0f bytes held per verified token", per)
	if per > 16 {
		t.Errorf("verified tokens hold %.0f bytes each, want none (no cache entry)", per)
	}
	if c := a.tokens.len(); c != 0 {
		t.Errorf("%d manifest-admitted tokens cached, want 0", c)
	}
	cl, err := a.verify(key, toks[7])
	if err != nil {
		t.Fatal(err)
	}
	if reflect.ValueOf(cl.Identity).UnsafePointer() != reflect.ValueOf(f.Devices[7].Spec.Identity).UnsafePointer() {
		t.Error("the claims carry a map of their own, not the manifest's identity")
	}
	want, err := verifyToken(key, toks[7], now)
	if err != nil {
		t.Fatal(err)
	}
	want.admitted, want.admittedBy = &f.Devices[7], a.adm.get(snap)
	if !reflect.DeepEqual(cl, want) {
		t.Errorf("direct verification = %+v, want %+v", cl, want)
	}
	if a.admitToken(snap, &cl) != &f.Devices[7] {
		t.Error("the directly verified token is not admitted by its manifest")
	}
	if allocs := testing.AllocsPerRun(500, func() {
		if _, err := a.verify(key, toks[11]); err != nil {
			t.Fatal(err)
		}
	}); allocs != 1 {
		t.Errorf("a manifest-admitted token costs %v allocations, want 1 (its strings)", allocs)
	}
	runtime.KeepAlive(kept)
	runtime.KeepAlive(toks)
}

// What the direct path does not verify goes through the cache and the
// admission check as before; what it verifies is checked as strictly.
func TestVerifyDirectRefuses(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	now := time.Unix(1_800_000_000, 0)
	fp1, fp2 := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	f := &schema.Fleet{Devices: []schema.Device{
		{Meta: schema.Meta{Name: "d1"}, Spec: schema.DeviceSpec{Identity: map[string]string{"mac": "m1"}, PublicKeySHA256: fp1}},
		{Meta: schema.Meta{Name: "keyonly"}, Spec: schema.DeviceSpec{PublicKeySHA256: fp2}},
		{Meta: schema.Meta{Name: "tofu"}, Spec: schema.DeviceSpec{Identity: map[string]string{"mac": "m3", "serial": "s3"}, TrustOnFirstUse: true}},
	}}
	snap := &reconcile.Snapshot{Fleet: f}
	cur := snap
	a := newTokenAPI(now)
	a.opts.Live = func() *reconcile.Snapshot { return cur }
	mk := func(id Attributes, fp string, exp time.Duration, signKey []byte) string {
		tok, err := signToken(signKey, Claims{Subject: "s-" + fp[:4], ID: "j", IssuedAt: now.Unix(), Expires: now.Add(exp).Unix(),
			Issuer: tokenIssuer, Device: true, Identity: id, Key: fp})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := mk(Attributes{"mac": "m1"}, fp1, time.Hour, key)
	if cl, err := a.verify(key, good); err != nil || cl.admitted != &f.Devices[0] {
		t.Fatalf("good token: %+v, %v", cl, err)
	}
	// Signed with another key, or expired: refused, though a manifest
	// admits what the payload says.
	if _, err := a.verify(key, mk(Attributes{"mac": "m1"}, fp1, time.Hour, bytes.Repeat([]byte{1}, 32))); !errors.Is(err, ErrToken) {
		t.Errorf("token signed with another key: %v", err)
	}
	if _, err := a.verify(key, mk(Attributes{"mac": "m1"}, fp1, -time.Second, key)); !errors.Is(err, ErrToken) {
		t.Errorf("expired token: %v", err)
	}
	// A signature of the good token over another payload.
	parts := strings.Split(good, ".")
	other := strings.Split(mk(Attributes{"mac": "m1"}, fp1, 2*time.Hour, key), ".")
	if _, err := a.verify(key, parts[0]+"."+other[1]+"."+parts[2]); !errors.Is(err, ErrToken) {
		t.Errorf("forged payload: %v", err)
	}
	// The key's manifest has another identity: not admitted.
	wrong := mk(Attributes{"mac": "m9"}, fp1, time.Hour, key)
	if cl, err := a.verify(key, wrong); err != nil || a.admitToken(snap, &cl) != nil {
		t.Errorf("a token whose identity is not its key's manifest's: %v admitted by %v", err, a.admitToken(snap, &cl))
	}
	// A key-only manifest admits whatever identity: the token's own.
	ko := mk(Attributes{"mac": "mx"}, fp2, time.Hour, key)
	if cl, err := a.verify(key, ko); err != nil || a.admitToken(snap, &cl) != &f.Devices[1] || cl.Identity["mac"] != "mx" {
		t.Errorf("key-only manifest: %+v, %v", cl, err)
	}
	// Trust on first use, by identity, attributes in any order.
	tofu := mk(Attributes{"serial": "s3", "mac": "m3"}, fp1, time.Hour, key)
	if cl, err := a.verify(key, tofu); err != nil || a.admitToken(snap, &cl) != &f.Devices[2] {
		t.Errorf("tofu device: %+v, %v", cl, err)
	}
	// A commit without d1: the good token's device is refused.
	cur = &reconcile.Snapshot{Fleet: &schema.Fleet{Devices: f.Devices[1:]}}
	if cl, err := a.verify(key, good); err != nil || a.admitToken(cur, &cl) != nil {
		t.Errorf("device no longer declared: %v, admitted by %v", err, a.admitToken(cur, &cl))
	}
}

// A client certificate's token verifies directly too: not cached, its
// identity its own, refused at its next call once its certificate is
// revoked.
func TestCertTokensVerifyDirectly(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	now := time.Unix(1_800_000_000, 0)
	snap := &reconcile.Snapshot{Fleet: &schema.Fleet{}}
	a := newTokenAPI(now)
	a.opts.Live = func() *reconcile.Snapshot { return snap }
	claims := Claims{Subject: strings.Repeat("ef", 32), ID: "0123456789abcdef", IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(),
		Issuer: tokenIssuer, Device: true, Identity: Attributes{"serial": "SN1", "site": "b"}, Key: strings.Repeat("cd", 32), Cert: "factory/1f"}
	tok, err := signToken(key, claims)
	if err != nil {
		t.Fatal(err)
	}
	revoked := map[string]bool{}
	a.tokens.setRevoked(func(cert string) bool { return revoked[cert] })
	for range 2 {
		got, err := a.verify(key, tok)
		if err != nil || !reflect.DeepEqual(got, claims) {
			t.Fatalf("certificate token: %+v, %v; want %+v", got, err, claims)
		}
	}
	if c := a.tokens.len(); c != 0 {
		t.Errorf("%d certificate tokens cached, want 0", c)
	}
	if n := testing.AllocsPerRun(500, func() {
		if _, err := a.verify(key, tok); err != nil {
			t.Fatal(err)
		}
	}); n > 3 {
		t.Errorf("a certificate token costs %v allocations, want at most 3 (its strings, its identity map)", n)
	}
	other := claims
	other.Expires++
	forged := strings.Split(tok, ".")
	if _, err := a.verify(key, forged[0]+"."+b64(mustJSON(other))+"."+forged[2]); !errors.Is(err, ErrToken) {
		t.Errorf("a certificate token's signature over another payload: %v", err)
	}
	revoked["factory/1f"] = true
	if _, err := a.verify(key, tok); !errors.Is(err, ErrToken) {
		t.Errorf("revoked certificate: %v", err)
	}
}

// admitRaw finds what admit finds, from the identity as a token writes it.
func TestAdmitRawMatchesAdmit(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	f := &schema.Fleet{Devices: []schema.Device{
		{Meta: schema.Meta{Name: "keyed"}, Spec: schema.DeviceSpec{Identity: map[string]string{"mac": "m1", "serial": "s1"}, PublicKeySHA256: fp}},
		{Meta: schema.Meta{Name: "tofu"}, Spec: schema.DeviceSpec{Identity: map[string]string{"mac": "m2", "serial": "s2"}, TrustOnFirstUse: true}},
		{Meta: schema.Meta{Name: "unicode"}, Spec: schema.DeviceSpec{Identity: map[string]string{"ort": "Zürich"}, TrustOnFirstUse: true}},
	}}
	adm := newAdmission(f)
	for _, id := range []Attributes{
		{"mac": "m1", "serial": "s1"}, {"mac": "m1"}, {"mac": "m1", "serial": "s1", "x": ""}, {"serial": "s1", "mac": "m1"},
		{"mac": "m2", "serial": "s2"}, {"mac": "m2"}, {"ort": "Zürich"}, {}, {"": ""},
	} {
		raw, _ := json.Marshal(map[string]string(id))
		if got, want := adm.admitRaw(string(raw), fp), adm.admit(id, false, fp); got != want {
			t.Errorf("admitRaw(%s) = %v, admit %v", raw, got, want)
		}
	}
	// Not in the form a token writes it: nothing.
	for _, raw := range []string{`{"serial":"s1","mac":"m1"}`, `{"mac":"m1","mac":"m1"}`, `{"mac":"m1",}`, `{"mac":"m1"} `, `{"mac":1}`, `null`, ``} {
		if d := adm.admitRaw(raw, fp); d != nil {
			t.Errorf("admitRaw(%s) = %s, want nil", raw, d.Name)
		}
	}
	if n := testing.AllocsPerRun(1000, func() {
		adm.admitRaw(`{"mac":"m1","serial":"s1"}`, fp)
		adm.admitRaw(`{"mac":"m2","serial":"s2"}`, "other")
	}); n != 0 {
		t.Errorf("admitRaw costs %v allocations, want 0", n)
	}
}

func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// The admission lookup of every call costs no allocation, also for a
// trust-on-first-use device found by its identity, and finds it whatever
// the order of the attributes.
func TestAdmitAllocatesNothing(t *testing.T) {
	f := &schema.Fleet{Devices: []schema.Device{
		{Meta: schema.Meta{Name: "keyed"}, Spec: schema.DeviceSpec{Identity: map[string]string{"mac": "m1"}, PublicKeySHA256: strings.Repeat("ab", 32)}},
		{Meta: schema.Meta{Name: "tofu"}, Spec: schema.DeviceSpec{Identity: map[string]string{"mac": "m2", "serial": "s2"}, TrustOnFirstUse: true}},
		{Meta: schema.Meta{Name: "tofu-other"}, Spec: schema.DeviceSpec{Identity: map[string]string{"mac": "m2", "serial": "s3"}, TrustOnFirstUse: true}},
	}}
	adm := newAdmission(f)
	keyed, tofu := Attributes{"mac": "m1"}, Attributes{"serial": "s2", "mac": "m2"}
	if d := adm.admit(keyed, false, strings.Repeat("ab", 32)); d == nil || d.Name != "keyed" {
		t.Fatalf("keyed device: admitted by %v", d)
	}
	if d := adm.admit(tofu, false, "any"); d == nil || d.Name != "tofu" {
		t.Fatalf("tofu device: admitted by %v", d)
	}
	if d := adm.admit(Attributes{"mac": "m2"}, false, "any"); d != nil {
		t.Fatalf("a part of an identity admitted by %s", d.Name)
	}
	fp := strings.Repeat("ab", 32)
	if n := testing.AllocsPerRun(1000, func() {
		adm.admit(keyed, false, fp)
		adm.admit(tofu, false, "any")
	}); n != 0 {
		t.Errorf("admission lookups cost %v allocations, want 0", n)
	}
}

// Manifests sharing a key or an identity: the first in file and line
// order admits, wherever the index keeps the others.
func TestAdmitFirstOfSameKey(t *testing.T) {
	fp := strings.Repeat("cd", 32)
	dev := func(name, file string, line int, id map[string]string, key string) schema.Device {
		return schema.Device{Meta: schema.Meta{Name: name, Source: schema.Source{File: file, Line: line}},
			Spec: schema.DeviceSpec{Identity: id, PublicKeySHA256: key, TrustOnFirstUse: key == ""}}
	}
	f := &schema.Fleet{Devices: []schema.Device{
		dev("b-late", "b.yaml", 9, map[string]string{"mac": "1"}, fp),
		dev("a-other-identity", "a.yaml", 1, map[string]string{"mac": "2"}, fp),
		dev("a-same", "a.yaml", 5, map[string]string{"mac": "1"}, fp),
		dev("tofu-late", "c.yaml", 3, map[string]string{"serial": "x"}, ""),
		dev("tofu-early", "c.yaml", 2, map[string]string{"serial": "x"}, ""),
	}}
	adm := newAdmission(f)
	for _, tc := range []struct {
		id   Attributes
		fp   string
		want string
	}{
		{Attributes{"mac": "1"}, fp, "a-same"},
		{Attributes{"mac": "2"}, fp, "a-other-identity"},
		{Attributes{"mac": "3"}, fp, ""},
		{Attributes{"serial": "x"}, "other", "tofu-early"},
	} {
		got := adm.admit(tc.id, false, tc.fp)
		if name := func() string {
			if got == nil {
				return ""
			}
			return got.Name
		}(); name != tc.want {
			t.Errorf("admit(%v, %.8s…) = %q, want %q", tc.id, tc.fp, name, tc.want)
		}
	}
}

// A token seen before carries the manifest that admitted it, used while
// the admission index is the same one; a commit with other devices looks
// again (and refuses a device no longer declared).
func TestSeenTokenSkipsAdmissionLookup(t *testing.T) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	now := time.Unix(1_800_000_000, 0)
	dev := schema.Device{Meta: schema.Meta{Name: "d1"}, Spec: schema.DeviceSpec{Identity: map[string]string{"mac": "m1"}, PublicKeySHA256: strings.Repeat("ab", 32)}}
	other := schema.Device{Meta: schema.Meta{Name: "d2"}, Spec: schema.DeviceSpec{Identity: map[string]string{"mac": "m2"}, PublicKeySHA256: strings.Repeat("cd", 32)}}
	snap := &reconcile.Snapshot{Fleet: &schema.Fleet{Devices: []schema.Device{dev, other}}}
	a := newTokenAPI(now)
	cur := snap
	a.opts.Live = func() *reconcile.Snapshot { return cur }
	tok, err := signToken(key, Claims{Subject: "s", ID: "j", IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(), Issuer: tokenIssuer,
		Device: true, Identity: Attributes{"mac": "m1"}, Key: strings.Repeat("ab", 32)})
	if err != nil {
		t.Fatal(err)
	}
	cl, err := a.verify(key, tok)
	if err != nil {
		t.Fatal(err)
	}
	if cl.admitted != &snap.Fleet.Devices[0] || a.admitToken(snap, &cl) != &snap.Fleet.Devices[0] {
		t.Fatalf("admitted by %v", cl.admitted)
	}
	// The cached claims name the manifest; a lookup that ignored them
	// would find the same one, so check the shortcut is taken by a
	// marker only it can return.
	marker := &schema.Device{Meta: schema.Meta{Name: "marker"}}
	cl.admitted = marker
	if got := a.admitToken(snap, &cl); got != marker {
		t.Fatalf("a seen token's admission looked up again: %v", got)
	}
	// Another commit without d1: another index, a fresh lookup, refused.
	cur = &reconcile.Snapshot{Fleet: &schema.Fleet{Devices: []schema.Device{other}}}
	cl, err = a.verify(key, tok)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.admitToken(cur, &cl); got != nil {
		t.Fatalf("a device no longer declared admitted by %s", got.Name)
	}
}
