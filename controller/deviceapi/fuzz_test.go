package deviceapi

import (
	"bytes"
	"encoding/json"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzDecoders feeds arbitrary bytes to every request decoder: none may
// panic, and what they accept must hold their invariants.
func FuzzDecoders(f *testing.F) {
	for _, s := range []string{
		`{"id_data":"{\"mac\":\"01\"}","pubkey":"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n","tenant_token":""}`,
		`{"id_data":"{\"mac\":[\"a\",\"b\"],\"n\":1,\"ok\":true,\"z\":null}","pubkey":"x"}`,
		`{"id_data":"{\"mac\":[\"02:00:00:00:00:01\"]}","pubkey":"x"}`,
		`{"mac":["02:00:00:00:00:01"]}`, `{"mac":"02:00:00:00:00:01"}`, `{"mac":[]}`, `{"mac":[["a"]]}`, `{"mac":1e400}`,
		`{"mac":"a","mac":["a"]}`, `{"\u006dac":"a"}`,
		"MEUCIQ==", "", "!!!!", testPubPEM,
		`{"device_provides":{"artifact_name":"a","device_type":"qemu","rootfs-image.version":"1"},"update_control_map":true}`,
		`{"artifact_name":"a","device_type":"qemu"}`,
		`{"status":"success","substate":"x"}`,
		`{"messages":[{"timestamp":"t","level":"info","message":"m"}]}`,
		`[{"name":"device_type","value":"qemu"},{"name":"ips","value":["1","2"]},{"name":"n","value":1.5e3}]`,
		`canary-g1`, `a-g01`, `{}`, `[]`, `null`, `"`, `{"a":1}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if req, id, err := DecodeAuthRequest(b); err == nil {
			if req.IDData == "" || req.PubKey == "" || id.Len() == 0 || id.Len() > MaxAttributes {
				t.Fatalf("accepted auth request %+v %v", req, id)
			}
			checkIdentity(t, id)
		}
		// id_data on its own (what the auth request carries as a string).
		if id, err := decodeIdentity(b); err == nil {
			checkIdentity(t, id)
		}
		// The signature header of any key: never a panic, never a pass.
		if pub, _, err := parseDeviceKey(testPubPEM); err == nil && verifySignature(pub, b, string(b)) == nil {
			t.Fatalf("signature header %q verified", b)
		}
		if r, err := DecodeNextV2(b); err == nil && r.DeviceType == "" {
			t.Fatal("v2 next without device type accepted")
		}
		if r, err := DecodeNextV1(b); err == nil && r.Provides["device_type"] != r.DeviceType {
			t.Fatal("v1 provides disagree")
		}
		if r, err := DecodeStatus(b); err == nil && !knownStatuses[r.Status] {
			t.Fatalf("unknown status %q accepted", r.Status)
		}
		_, _ = DecodeLog(b)
		if inv, err := DecodeInventory(b); err == nil {
			enc := encodeInventory(inv)
			if !json.Valid(enc) {
				t.Fatalf("inventory encodes to invalid JSON %s", enc)
			}
			if got := encodeInventory(mustInv(t, enc)); !bytes.Equal(got, enc) {
				t.Fatalf("inventory does not round-trip: %s vs %s", got, enc)
			}
			_ = InventoryAttributes(enc)
		}
		if g, err := ParseDeploymentID(string(b)); err == nil && DeploymentID(g) != string(b) {
			t.Fatalf("deployment ID %q parses to %v", b, g)
		}
		_, _, _ = parseDeviceKey(string(b))
	})
}

// checkIdentity: a decoded identity round-trips through its canonical
// form to the same ID and type, and a non-string value is never a string.
func checkIdentity(t *testing.T, id Identity) {
	again, err := decodeIdentity(id.Canonical())
	if err != nil || again.ID() != id.ID() || again.Typed != id.Typed || !maps.Equal(again.Strings, id.Strings) {
		t.Fatalf("canonical identity does not round-trip: %s: %v", id.Canonical(), err)
	}
	if !id.Typed && id.ID() != DeviceID(id.Strings) {
		t.Fatalf("string identity %s: ID %s, DeviceID %s", id.Canonical(), id.ID(), DeviceID(id.Strings))
	}
	if id.Typed && len(id.Strings) == id.Len() {
		t.Fatalf("typed identity %s has only strings", id.Canonical())
	}
}

// testPubPEM is a P-256 public key for the signature fuzzing.
const testPubPEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\nq9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n-----END PUBLIC KEY-----\n"

func mustInv(t *testing.T, b []byte) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// FuzzToken feeds arbitrary bearer tokens to the token check, seeded with a
// valid token: nothing may panic, and whatever is accepted must carry
// exactly the claims the controller signed (no forged or altered claims).
func FuzzToken(f *testing.F) {
	key := bytes.Repeat([]byte{0x5a}, 32)
	now := time.Unix(1_800_000_000, 0)
	claims := Claims{Subject: "dev-1", ID: "j1", IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix(),
		Issuer: tokenIssuer, Device: true, Key: strings.Repeat("ab", 32)}
	valid, err := signToken(key, claims)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	parts := strings.Split(valid, ".")
	f.Add(b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".")
	f.Add(parts[0] + "." + parts[1])
	f.Add("")
	f.Fuzz(func(t *testing.T, tok string) {
		got, err := verifyToken(key, tok, now)
		if err != nil {
			return
		}
		if !reflect.DeepEqual(got, claims) {
			t.Fatalf("token %q accepted with claims %+v, want the signed %+v", tok, got, claims)
		}
	})
}
