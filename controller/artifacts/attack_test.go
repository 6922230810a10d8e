package artifacts

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/artifact/artifacttest"
	"github.com/gitfleet/gitfleet/schema"
)

// augmented is the attack of issue 10: a script artifact signed by signer
// (nil: unsigned) whose payload carries evil.sh, listed only in the
// unsigned manifest-augment.
func augmented(t *testing.T, signer *testKey) []byte {
	t.Helper()
	o := artifacttest.AugmentedOptions{
		Name: "app-1", DeviceType: "board-a",
		Signed:    map[string][]byte{"run.sh": []byte("#!/bin/sh\necho signed\n")},
		Augmented: map[string][]byte{"evil.sh": []byte("#!/bin/sh\necho unsigned\n")},
	}
	if signer != nil {
		o.Signer = signer.signer
	}
	data, err := artifacttest.Augmented(o)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestAttackAugmentedFiles: the controller never offers an artifact whose
// required signature leaves part of it uncovered.
func TestAttackAugmentedFiles(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, e *env) schema.Artifact
	}{
		{"signed script artifact + data file listed only in manifest-augment, signedBy release → not offered (ErrUnsigned, ErrAugmented)",
			func(t *testing.T, e *env) schema.Artifact {
				e.put("a.mender", augmented(t, key(t, "release")))
				return manifest("app-1", "a.mender", signedBy("release"))
			}},
		{"same artifact with a detached signature (.sigs) → not offered",
			func(t *testing.T, e *env) schema.Artifact {
				data := augmented(t, nil)
				e.put("a.mender", data)
				sig, err := SignDetached(bytes.NewReader(data), key(t, "release").signer)
				if err != nil {
					t.Fatal(err)
				}
				e.put("a.mender.sigs", sig)
				return manifest("app-1", "a.mender", signedBy("release"))
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			a := tc.setup(t, e)
			ent, err := e.cache.Ensure(context.Background(), a, fleetKeys(t, "release"))
			if err == nil {
				t.Fatalf("offered: %+v", ent)
			}
			if !errors.Is(err, ErrUnsigned) || !errors.Is(err, artifact.ErrAugmented) || !strings.Contains(err.Error(), "data/0000/evil.sh") {
				t.Fatalf("error %v, want ErrUnsigned wrapping artifact.ErrAugmented naming data/0000/evil.sh", err)
			}
			if got, _ := e.cache.Lookup(a.Name); got != nil {
				t.Fatalf("Lookup offers it: %+v", got)
			}
		})
	}
}

// TestAugmentedWithoutSignedBy: with no signature required, an augmented
// artifact is offered as before (the devices decide with their own keys).
func TestAugmentedWithoutSignedBy(t *testing.T) {
	e := newEnv(t)
	e.put("a.mender", augmented(t, key(t, "release")))
	if _, err := e.cache.Ensure(context.Background(), manifest("app-1", "a.mender"), nil); err != nil {
		t.Fatal(err)
	}
}
