package notify

import (
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The kinds are the schema's #Event list, in its order, and nothing else.
func TestKindsAreTheSchemaEventList(t *testing.T) {
	src, err := os.ReadFile("../../schema/notification.cue")
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`(?s)#Event:(.*?)\n\n`).FindSubmatch(append(src, '\n', '\n'))
	if decl == nil {
		t.Fatal("no #Event declaration in schema/notification.cue")
	}
	var want []Kind
	for _, m := range regexp.MustCompile(`"([a-z_.]+)"`).FindAllStringSubmatch(string(decl[1]), -1) {
		want = append(want, Kind(m[1]))
	}
	if got := Kinds(); !slices.Equal(got, want) {
		t.Errorf("Kinds() = %v\nschema #Event = %v", got, want)
	}
	for _, k := range want {
		if !k.Valid() {
			t.Errorf("%s not Valid", k)
		}
	}
}

func TestFilter(t *testing.T) {
	f := Filter{Events: []Kind{RolloutAborted, RolloutCompleted, AlertRaised, CommitRefused},
		Rollouts: []string{"canary"}, Checks: []string{"ssh-root"}}
	for _, tc := range []struct {
		name string
		e    Event
		want bool
	}{
		{"listed rollout", Event{Kind: RolloutAborted, Rollout: "canary"}, true},
		{"other rollout", Event{Kind: RolloutAborted, Rollout: "stable"}, false},
		{"rollout event naming no rollout", Event{Kind: RolloutCompleted}, false},
		{"kind not listed", Event{Kind: RolloutStarted, Rollout: "canary"}, false},
		{"listed check", Event{Kind: AlertRaised, Check: "ssh-root", Device: "d"}, true},
		{"other check", Event{Kind: AlertRaised, Check: "disk"}, false},
		{"alert from a device in another rollout: rollouts narrow rollout events only", Event{Kind: AlertRaised, Check: "ssh-root", Rollout: "stable"}, true},
		{"commit event: only Events applies", Event{Kind: CommitRefused, Commit: "abc"}, true},
		{"device.pending not listed", Event{Kind: DevicePending}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := f.Match(tc.e); got != tc.want {
				t.Errorf("Match = %v, want %v", got, tc.want)
			}
		})
	}
	if !(Filter{}).Match(Event{Kind: DevicePending}) {
		t.Error("the empty filter must select everything")
	}
}

func TestEventValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    Event
		want error
	}{
		{"ok, ID made later", Event{Kind: AlertCleared}, nil},
		{"ok with ID", Event{Kind: AlertCleared, ID: "alert:dev-1:ssh-root:17"}, nil},
		{"unknown kind", Event{Kind: "rollout.finished"}, ErrUnknownKind},
		{"ID carrying a header line → refused", Event{Kind: AlertCleared, ID: "x\r\nX-Evil: 1"}, ErrBadID},
		{"ID with a space → refused", Event{Kind: AlertCleared, ID: "a b"}, ErrBadID},
		{"overlong ID → refused", Event{Kind: AlertCleared, ID: strings.Repeat("a", 129)}, ErrBadID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.e.Validate(); !errors.Is(err, tc.want) {
				t.Errorf("Validate = %v, want %v", err, tc.want)
			}
		})
	}
	if id := NewID(); !validID(id) || id == NewID() {
		t.Errorf("NewID %q", id)
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"dev-1":                    "dev-1",
		"a\r\nBcc: x@evil.example": "a  Bcc: x@evil.example",
		"tab\there\x00nul\x7f":     "tab here nul ",
		"line\u2028sep":            "line sep",
		"bad utf8 \xff":            "bad utf8 ?",
		strings.Repeat("x", 300):   strings.Repeat("x", 200) + "…",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}
