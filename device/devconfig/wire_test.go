package devconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestEncodeIsCanonical(t *testing.T) {
	cases := []struct {
		name   string
		values map[string]string
		want   string
	}{
		{"nil", nil, `{}`},
		{"empty", map[string]string{}, `{}`},
		{"sorted", map[string]string{"b": "2", "a": "1", "A": "0"}, `{"A":"0","a":"1","b":"2"}`},
		{"escapes", map[string]string{"k": "<p & \"q\">\n"}, `{"k":"\u003cp \u0026 \"q\"\u003e\n"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(Encode(tc.values))
			if got != tc.want {
				t.Fatalf("Encode = %s, want %s", got, tc.want)
			}
			var back map[string]string
			if err := json.Unmarshal([]byte(got), &back); err != nil || len(back) != len(tc.values) {
				t.Fatalf("Encode's output does not decode to the values: %v %v", back, err)
			}
			for k, v := range tc.values {
				if back[k] != v {
					t.Errorf("%q: %q after a round trip, want %q", k, back[k], v)
				}
			}
		})
	}
	// sha256("{}"): the controller and the device agree on it.
	if d := Digest(nil); d != "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" {
		t.Errorf("Digest({}) = %s", d)
	}
}

func TestVerify(t *testing.T) {
	values := map[string]string{"wifi_password": "hunter2-secret"}
	many := map[string]string{}
	for i := range MaxKeys + 1 {
		many[fmt.Sprint("k", i)] = "v"
	}
	cases := []struct {
		name string
		cfg  Configuration
		ok   bool
	}{
		{"good", Configuration{Digest: Digest(values), Values: values}, true},
		{"empty", Configuration{Digest: Digest(nil)}, true},
		{"wrong digest", Configuration{Digest: Digest(nil), Values: values}, false},
		{"no digest", Configuration{Values: values}, false},
		{"too many keys", Configuration{Digest: Digest(many), Values: many}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Verify()
			if tc.ok != (err == nil) {
				t.Fatalf("Verify = %v, want ok %v", err, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "hunter2")) {
				t.Errorf("Verify = %v: want ErrInvalid without the values", err)
			}
		})
	}
}
