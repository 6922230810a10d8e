package receive

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

// FuzzPayload feeds arbitrary bodies and event names to every provider's
// decoder, and then through a whole Handler (unsigned, so that the decoders
// are reached). Nothing may panic, a decoded push must carry sane refs and
// SHAs, and no response may be a 5xx.
func FuzzPayload(f *testing.F) {
	seeds, _ := filepath.Glob(filepath.Join("testdata", "*.json"))
	events := []string{"push", "ping", "Push Hook", "Tag Push Hook", "System Hook", "repo:refs_changed", "repo:push", "diagnostics:ping", ""}
	for i, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		for j, ev := range events {
			f.Add(uint8(i+j), ev, b)
		}
	}
	f.Add(uint8(0), "repo:push", []byte(`{"push":{"changes":[{"new":null,"old":null}]}}`))
	f.Add(uint8(0), "repo:push", []byte(`{"push":{"changes":[{"new":{"type":"tag","name":"v1","target":{"hash":"`+"0123456789012345678901234567890123456789"+`"}}}]}}`))
	f.Add(uint8(0), "System Hook", []byte(`{"event_name":"tag_push","ref":"refs/tags/x"}`))
	f.Add(uint8(0), "push", []byte(`{"ref":"refs/heads/main","after":"zz"}`))

	h, err := New(Options{
		AllowUnsigned: true,
		Ref:           "main",
		Trigger:       (&triggers{}).trigger,
		PerSource:     Limit{Rate: -1},
		Global:        Limit{Rate: -1},
		MaxBody:       64 << 10,
	})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, which uint8, eventName string, body []byte) {
		p := providers[detectOrder[int(which)%len(detectOrder)]]
		ev, err := p.decode(eventName, body)
		if err == nil && ev.Kind == kindPush {
			if len(ev.Updates) == 0 {
				t.Fatalf("%s push with no ref updates", p.name)
			}
			for _, u := range ev.Updates {
				if !validRef(u.Ref) || !validSHA(u.After) {
					t.Fatalf("%s push with bad update %+v", p.name, u)
				}
			}
		}

		req := httptest.NewRequest(http.MethodPost, "/hooks", bytes.NewReader(body))
		if p.eventHeader != "" {
			req.Header.Set(p.eventHeader, sanitizeHeader(eventName))
		}
		rec := httptest.NewRecorder()
		h.For(p.name).ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s: status %d", p.name, rec.Code)
		}
	})
}

// sanitizeHeader drops bytes a real HTTP header cannot carry.
func sanitizeHeader(s string) string {
	b := []byte(s)
	out := b[:0]
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			out = append(out, c)
		}
	}
	return string(out)
}
