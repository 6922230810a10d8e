package schema

import (
	"testing"
	"testing/fstest"
)

const validArtifact = `apiVersion: gitfleet.io/v1
kind: Artifact
metadata: {name: a}
spec: {source: a.mender, deviceTypes: [pi]}
`

func TestLoadEmpty(t *testing.T) {
	f, err := Load(fstest.MapFS{"README.md": {Data: []byte("# fleet")}})
	if err != nil || f.Len() != 0 {
		t.Fatalf("Load(empty) = %d manifests, %v; want 0, nil", f.Len(), err)
	}
}

func TestErrorString(t *testing.T) {
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{File: "a.yaml", Line: 3, Col: 4, Path: "spec.x", Msg: "bad"}, "a.yaml:3:4: spec.x: bad"},
		{Error{File: "a.yaml", Line: 3, Msg: "bad"}, "a.yaml:3: bad"},
		{Error{File: "a.yaml", Msg: "bad"}, "a.yaml: bad"},
		{Error{Msg: "bad"}, "bad"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}
