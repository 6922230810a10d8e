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

// FuzzSignature feeds every provider's authenticity headers (signatures,
// tokens, timestamps, delivery IDs) arbitrary values, through a Handler
// with a secret: nothing may panic, no response may be a 5xx, and nothing
// that does not know the secret may trigger.
func FuzzSignature(f *testing.F) {
	body := []byte(`{"ref":"refs/heads/main","after":"0123456789012345678901234567890123456789"}`)
	f.Add(uint8(0), "sha256=00", "1777896000", "id-1", body)
	f.Add(uint8(1), "v1,AAAA v2,BBBB", "1777896000", "msg_1", body)
	f.Add(uint8(2), "deadbeef", "", "", body)
	f.Add(uint8(5), "sha256="+hexMAC("other", body), "99999999999999999999", "x\ny", body)
	f.Add(uint8(5), "sha256=", "+1", "", []byte{})
	for _, s := range []string{"whsec_", "whsec_%%%", "whsec_AAAA"} {
		f.Add(uint8(2), s, "1", "1", body)
	}
	tr := &triggers{}
	opts := Options{
		Secret:    testSecret,
		Secrets:   map[Provider]Secret{GitLab: "whsec_" + "c2lnbmluZy1rZXktZm9yLWZ1enppbmc="},
		Ref:       "main",
		Trigger:   tr.trigger,
		PerSource: Limit{Rate: -1},
		Global:    Limit{Rate: -1},
		MaxBody:   64 << 10,
	}
	h, err := New(opts)
	if err != nil {
		f.Fatal(err)
	}
	opts.Secrets = nil // GitLab's plain token
	plain, err := New(opts)
	if err != nil {
		f.Fatal(err)
	}
	sigHeaders := []string{"X-Hub-Signature-256", "X-Gitlab-Token", "Webhook-Signature", "X-Gitea-Signature",
		"X-Forgejo-Signature", "X-Hub-Signature", "X-Gitfleet-Signature"}
	f.Fuzz(func(t *testing.T, which uint8, sig, ts, id string, body []byte) {
		p := providers[detectOrder[int(which)%len(detectOrder)]]
		for _, handler := range []*Handler{h, plain} {
			req := httptest.NewRequest(http.MethodPost, "/hooks", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if p.eventHeader != "" {
				req.Header.Set(p.eventHeader, "push")
			}
			for _, k := range sigHeaders {
				req.Header.Set(k, sanitizeHeader(sig))
			}
			for _, k := range []string{"X-Gitfleet-Timestamp", "Webhook-Timestamp"} {
				req.Header.Set(k, sanitizeHeader(ts))
			}
			for _, k := range append([]string{"Webhook-Id"}, p.delivery...) {
				req.Header.Set(k, sanitizeHeader(id))
			}
			rec := httptest.NewRecorder()
			handler.For(p.name).ServeHTTP(rec, req)
			if rec.Code >= 500 {
				t.Fatalf("%s: status %d", p.name, rec.Code)
			}
		}
		if n := tr.count(); n != 0 {
			t.Fatalf("%s: a delivery without the secret triggered", p.name)
		}
	})
}
