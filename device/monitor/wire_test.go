package monitor

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// allProbes is one check per probe, with every field set, durations
// included.
func allProbes() []Check {
	return []Check{
		{Name: "app-errors", Severity: Critical, Expiry: 90 * time.Second, Interval: 5 * time.Second,
			Log: &Log{Path: "/var/log/app.log", Pattern: `ERROR|panic: `}},
		{Name: "journal", Log: &Log{Path: "@journalctl -f", Pattern: "oops"}},
		{Name: "sshd", Severity: Warning, Expiry: 48 * time.Hour, Service: &Service{Name: "sshd.service"}},
		{Name: "ports", Interval: time.Minute, ListeningPorts: &ListeningPorts{Allow: []int{22, 443}}},
		{Name: "setuid", Interval: 10 * time.Minute, Setuid: &Setuid{Paths: []string{"/usr/bin", "/usr/sbin"}}},
		{Name: "etc", Severity: Error, Interval: 5 * time.Minute, FileChange: &FileChange{Paths: []string{"/etc/passwd", "/etc/shadow"}}},
		{Name: "restart", ProcessRestart: &ProcessRestart{Name: "app"}},
		{Name: "traffic", Severity: Info, Traffic: &Traffic{Interface: "eth0", MaxBytes: 1 << 30, Window: 90 * time.Minute}},
		{Name: "traffic-default-window", Traffic: &Traffic{Interface: "wlan0", MaxBytes: 10}},
		{Name: "wifi", Wifi: &Wifi{Interface: "wlan0", Expected: "plant-floor"}},
		{Name: "root", RootLogin: &RootLogin{Log: "/var/log/auth.log"}},
		{Name: "deploys", Interval: 10 * time.Second, FailedDeployments: &FailedDeployments{}},
		{Name: "preload", Expiry: 25 * time.Minute, LibraryInjection: &LibraryInjection{}},
	}
}

func TestWireCheckSetRoundTrip(t *testing.T) {
	in := CheckSet{Checks: allProbes()}
	for _, c := range in.Checks {
		if err := c.Validate(); err != nil {
			t.Fatalf("test check invalid: %v", err)
		}
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out CheckSet
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("unmarshal %s: %v", b, err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip changed the checks:\n in  %+v\n out %+v\n json %s", in, out, b)
	}
	// Durations travel as Go duration strings; zero ones are left out.
	s := string(b)
	for _, want := range []string{`"expiry":"1m30s"`, `"interval":"5s"`, `"window":"1h30m0s"`, `"expiry":"25m0s"`,
		`"failedDeployments":{}`, `"libraryInjection":{}`, `"maxBytes":1073741824`, `"allow":[22,443]`} {
		if !strings.Contains(s, want) {
			t.Errorf("JSON lacks %s: %s", want, s)
		}
	}
	var generic struct {
		Checks []map[string]any `json:"checks"`
	}
	if err := json.Unmarshal(b, &generic); err != nil {
		t.Fatal(err)
	}
	if first := generic.Checks[0]; first["expiry"] != "1m30s" || first["Expiry"] != nil || first["name"] != "app-errors" {
		t.Errorf("first check on the wire: %v", first)
	}
	// The JSON of one check is stable: decoding and encoding again gives
	// the same bytes.
	again, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != s {
		t.Errorf("second encoding differs:\n%s\n%s", s, again)
	}
}

func TestWireCheckDecodesHandWrittenJSON(t *testing.T) {
	var c Check
	err := json.Unmarshal([]byte(`{"name":"t","severity":"warning","expiry":"2h","interval":"30s",
		"traffic":{"interface":"eth0","maxBytes":5,"window":"15m"}}`), &c)
	if err != nil {
		t.Fatal(err)
	}
	want := Check{Name: "t", Severity: Warning, Expiry: 2 * time.Hour, Interval: 30 * time.Second,
		Traffic: &Traffic{Interface: "eth0", MaxBytes: 5, Window: 15 * time.Minute}}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("decoded %+v, want %+v", c, want)
	}
}

func TestWireCheckBadDuration(t *testing.T) {
	for _, tc := range []struct{ name, json, want string }{
		{"expiry", `{"name":"a","expiry":"two days","service":{"name":"x"}}`, `expiry "two days"`},
		{"interval", `{"name":"b","interval":"5","service":{"name":"x"}}`, `interval "5"`},
		{"window", `{"name":"c","traffic":{"interface":"eth0","maxBytes":1,"window":"1 hour"}}`, `traffic window "1 hour"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Check
			err := json.Unmarshal([]byte(tc.json), &c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestWireAlertBatchAndAckRoundTrip(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	in := AlertBatch{Events: []Event{
		{Seq: 7, Check: "etc", Key: "/etc/passwd", Kind: Raised, Severity: Critical, Evidence: "sha256 changed", Time: at},
		{Seq: 8, Check: "ports", Kind: CheckError, Severity: Error, Evidence: "no /proc", Time: at.Add(time.Second)},
	}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out AlertBatch
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip: %+v, want %+v", out, in)
	}
	if !strings.Contains(string(b), `"kind":"check_error"`) || strings.Contains(string(b), `"key":""`) {
		t.Errorf("event JSON: %s", b)
	}
	var ack AlertAck
	if err := json.Unmarshal([]byte(`{"seq":8}`), &ack); err != nil || ack.Seq != 8 {
		t.Errorf("ack = %+v, %v", ack, err)
	}
}
