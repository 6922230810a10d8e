package deviceapi

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestTokenCacheHonoursExpiry(t *testing.T) {
	var c tokenCache
	now := time.Unix(1_800_000_000, 0)
	c.put("tok", Claims{Subject: "d", Expires: now.Unix() + 60})
	if _, ok := c.get("tok", now); !ok {
		t.Fatal("fresh token not cached")
	}
	if _, ok := c.get("tok", now.Add(61*time.Second)); ok {
		t.Fatal("expired token served from the cache")
	}
	if _, ok := c.get("other", now); ok {
		t.Fatal("unknown token served from the cache")
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
