package schema_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	jsonschema "github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/gitfleet/gitfleet/schema"
)

var updateReference = flag.Bool("update-reference", false, "rewrite docs/reference from the schema")

// referenceExamples are the example repositories the reference quotes.
func referenceExamples() map[string]fs.FS {
	return map[string]fs.FS{
		"examples/quickstart":          os.DirFS("../examples/quickstart"),
		"examples/security-monitoring": os.DirFS("../examples/security-monitoring"),
		"fleet-repo-template":          os.DirFS("../fleet-repo-template"),
	}
}

// TestReferenceUpToDate fails when docs/reference differs from what the
// schema generates: a field added to the schema without its page, or a
// page edited by hand. `go test ./schema -run Reference -update-reference`
// (or `gitfleet schema reference --out docs/reference`) rewrites it.
func TestReferenceUpToDate(t *testing.T) {
	ref, err := schema.Reference()
	if err != nil {
		t.Fatal(err)
	}
	files, err := ref.Files(referenceExamples())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "docs", "reference")
	if *updateReference {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("docs/reference/%s is not what the schema generates (%v): run go test ./schema -run Reference -update-reference", name, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, ok := files[e.Name()]; !ok {
			t.Errorf("docs/reference/%s is not generated from the schema any more: delete it", e.Name())
		}
	}
}

// TestReferenceCoversEveryField: every kind's page lists each field the
// schema declares, required fields marked, and documents every field.
func TestReferenceCoversEveryField(t *testing.T) {
	ref, err := schema.Reference()
	if err != nil {
		t.Fatal(err)
	}
	if len(ref.Kinds) != len(schema.Kinds()) {
		t.Fatalf("reference has %d kinds, the schema %d", len(ref.Kinds), len(schema.Kinds()))
	}
	want := map[schema.Kind][]string{
		schema.KindRollout:      {"spec.phases[].abort.maxTimedOutPercent", "spec.maintenanceWindows[].timeZone", "spec.onlineWindow"},
		schema.KindNotification: {"spec.gitStatus.token.file", "spec.events"},
		schema.KindMonitorCheck: {"spec.traffic.maxBytes", "spec.libraryInjection"},
		schema.KindDevice:       {"spec.devices[].name", "spec.publicKeySHA256"},
	}
	for _, k := range ref.Kinds {
		var paths []string
		for _, f := range k.Fields {
			paths = append(paths, f.Path)
			if f.Doc == "" && !strings.HasPrefix(f.Path, "kind") {
				t.Errorf("%s: field %s has no documentation comment in the schema", k.Kind, f.Path)
			}
			if f.Path == "spec" && !f.Required {
				t.Errorf("%s: spec not marked required", k.Kind)
			}
		}
		for _, p := range want[k.Kind] {
			if !slices.Contains(paths, p) {
				t.Errorf("%s: reference lacks field %s (has %v)", k.Kind, p, paths)
			}
		}
	}
}

// TestJSONSchemaAcceptsExamplesRejectsMistakes checks the JSON Schema
// editors use with a JSON Schema validator: every example manifest passes,
// and typical mistakes fail.
func TestJSONSchemaAcceptsExamplesRejectsMistakes(t *testing.T) {
	js, err := schema.JSONSchema()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("gitfleet.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("gitfleet.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, fsys := range referenceExamples() {
		err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) || strings.HasPrefix(path, "policies/") || strings.Contains(path, "/.") {
				return err
			}
			b, err := fs.ReadFile(fsys, path)
			if err != nil {
				return err
			}
			dec := yaml.NewDecoder(bytes.NewReader(b))
			for {
				var v any
				if err := dec.Decode(&v); err != nil {
					break
				}
				if m, ok := v.(map[string]any); !ok || m["kind"] == nil {
					continue
				}
				n++
				if err := sch.Validate(toJSON(t, v)); err != nil {
					t.Errorf("%s/%s: the JSON Schema refuses a valid manifest: %v", name, path, err)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if n < 10 {
		t.Fatalf("only %d example manifests checked", n)
	}
	bad := map[string]string{
		"unknown field":    `{"apiVersion":"gitfleet.io/v1","kind":"DeviceGroup","metadata":{"name":"g"},"spec":{"members":["a"],"memebrs":["b"]}}`,
		"wrong apiVersion": `{"apiVersion":"gitfleet.io/v2","kind":"DeviceGroup","metadata":{"name":"g"},"spec":{"members":["a"]}}`,
		"bad name":         `{"apiVersion":"gitfleet.io/v1","kind":"DeviceGroup","metadata":{"name":"-bad-"},"spec":{"members":["a"]}}`,
		"percent over 100": `{"apiVersion":"gitfleet.io/v1","kind":"Rollout","metadata":{"name":"r"},"spec":{"artifact":"a","target":{"all":true},"phases":[{"name":"p","percent":150}]}}`,
		"bad duration":     `{"apiVersion":"gitfleet.io/v1","kind":"Rollout","metadata":{"name":"r"},"spec":{"artifact":"a","target":{"all":true},"phases":[{"name":"p","count":1,"hold":"soon"}]}}`,
		"missing spec":     `{"apiVersion":"gitfleet.io/v1","kind":"Artifact","metadata":{"name":"a"}}`,
		"unknown kind":     `{"apiVersion":"gitfleet.io/v1","kind":"Robot","metadata":{"name":"a"},"spec":{}}`,
	}
	for what, s := range bad {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(s))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(v); err == nil {
			t.Errorf("%s: the JSON Schema accepts %s", what, s)
		}
	}
}

func toJSON(t *testing.T, v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}
