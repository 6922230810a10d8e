package notify

import (
	"crypto/hmac"
	"net/http"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/webhooks/receive"
)

// Sign is exactly the scheme Gitfleet's generic inbound webhook verifies,
// so Gitfleet can notify itself.
func TestSignatureMatchesInboundGenericReceiver(t *testing.T) {
	secret, ts, id, body := "s3cret", "1767323045", "evt-1", []byte(`{"event":"alert.raised"}`)
	got := Sign([]byte(secret), ts, id, body)
	want := receive.SignGeneric(receive.Secret(secret), ts, id, body)
	if got != want {
		t.Fatalf("Sign = %s, receive.SignGeneric = %s", got, want)
	}
	if !strings.HasPrefix(got, "sha256=") || len(got) != len("sha256=")+64 {
		t.Fatalf("signature format %q", got)
	}
}

// A receiver that checks the signature refuses every altered or forged
// delivery: each changed part of a genuine one breaks the MAC.
func TestSignatureRefusesForgedOrAlteredDelivery(t *testing.T) {
	secret := []byte("s3cret-signing-key")
	ts, id, body := "1767323045", "evt-1", []byte(`{"id":"evt-1","event":"alert.raised","device":"dev-1"}`)
	genuine := Sign(secret, ts, id, body)
	verify := func(sig, ts, id string, body []byte) bool {
		return hmac.Equal([]byte(sig), []byte(Sign(secret, ts, id, body)))
	}
	if !verify(genuine, ts, id, body) {
		t.Fatal("genuine delivery does not verify")
	}
	for _, tc := range []struct {
		name        string
		sig, ts, id string
		body        []byte
	}{
		{"altered body → refused", genuine, ts, id, []byte(`{"id":"evt-1","event":"alert.cleared","device":"dev-1"}`)},
		{"body with one byte appended → refused", genuine, ts, id, append(append([]byte{}, body...), ' ')},
		{"replayed with a new timestamp → refused", genuine, "1767326645", id, body},
		{"replayed under another delivery ID → refused", genuine, ts, "evt-2", body},
		{"signed with another secret → refused", Sign([]byte("guess"), ts, id, body), ts, id, body},
		{"signature without sha256= prefix → refused", strings.TrimPrefix(genuine, "sha256="), ts, id, body},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if verify(tc.sig, tc.ts, tc.id, tc.body) {
				t.Error("verified")
			}
		})
	}
}

// A receiver that verifies signatures rejects an altered body end to end:
// the same receiver the delivery tests use answers 401.
func TestSignatureReceiverRejectsAlteredBody(t *testing.T) {
	r := newReceiver(t, "s3cret-signing-key")
	body := []byte(`{"id":"evt-1","event":"alert.raised"}`)
	ts, id := "1767323045", "evt-1"
	sig := Sign([]byte("s3cret-signing-key"), ts, id, body)
	for _, tc := range []struct {
		name string
		body string
		want int
	}{
		{"genuine → accepted", string(body), http.StatusNoContent},
		{"altered body → 401", `{"id":"evt-1","event":"alert.cleared"}`, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, r.srv.URL, strings.NewReader(tc.body))
			req.Header.Set(HeaderTimestamp, ts)
			req.Header.Set(HeaderDelivery, id)
			req.Header.Set(HeaderSignature, sig)
			resp, err := r.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
