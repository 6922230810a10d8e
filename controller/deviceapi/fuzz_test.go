package deviceapi

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecoders feeds arbitrary bytes to every request decoder: none may
// panic, and what they accept must hold their invariants.
func FuzzDecoders(f *testing.F) {
	for _, s := range []string{
		`{"id_data":"{\"mac\":\"01\"}","pubkey":"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n","tenant_token":""}`,
		`{"id_data":"{\"mac\":[\"a\",\"b\"],\"n\":1,\"ok\":true,\"z\":null}","pubkey":"x"}`,
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
			if req.IDData == "" || req.PubKey == "" || len(id) == 0 || len(id) > MaxAttributes {
				t.Fatalf("accepted auth request %+v %v", req, id)
			}
			again, err := decodeAttributeObject(id.Canonical(), "id")
			if err != nil || DeviceID(again) != DeviceID(id) {
				t.Fatalf("canonical identity does not round-trip: %s: %v", id.Canonical(), err)
			}
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

func mustInv(t *testing.T, b []byte) map[string]json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
