package schema

import (
	"encoding/json"
	"fmt"
	"strings"

	"cuelang.org/go/cue/ast"
)

// APIVersion is the apiVersion of every manifest this package understands.
const APIVersion = "gitfleet.io/v1"

// A Kind names a manifest kind.
type Kind string

// The manifest kinds.
const (
	KindArtifact     Kind = "Artifact"
	KindRollout      Kind = "Rollout"
	KindDeviceGroup  Kind = "DeviceGroup"
	KindDevice       Kind = "Device"
	KindMonitorCheck Kind = "MonitorCheck"
	KindDeviceConfig Kind = "DeviceConfig"
	KindSigningKey   Kind = "SigningKey"
	KindNotification Kind = "Notification"
	KindDeviceCA     Kind = "DeviceCA"
	KindOperator     Kind = "Operator"
)

// Kinds lists every manifest kind.
func Kinds() []Kind {
	return []Kind{
		KindArtifact, KindRollout, KindDeviceGroup, KindDevice,
		KindMonitorCheck, KindDeviceConfig, KindSigningKey, KindNotification,
		KindDeviceCA, KindOperator,
	}
}

// A Source is a position in the fleet repository. File is slash-separated
// and relative to the root of the tree given to [Load]. Line and Col start
// at 1; zero means unknown.
type Source struct {
	File string
	Line int
	Col  int
}

// String returns "file:line:col", leaving out what is unknown.
func (s Source) String() string {
	switch {
	case s.Line == 0:
		return s.File
	case s.Col == 0:
		return fmt.Sprintf("%s:%d", s.File, s.Line)
	}
	return fmt.Sprintf("%s:%d:%d", s.File, s.Line, s.Col)
}

// Meta is the envelope every manifest shares: its apiVersion, kind,
// metadata.name and metadata.labels, and where the document is.
type Meta struct {
	APIVersion string
	Kind       Kind
	Name       string
	Labels     map[string]string

	// Source is the position of the document (of its first key).
	Source Source

	// doc is the document's syntax tree, kept to answer Pos. For one of
	// several devices of a manifest, entry is its path ("spec.devices[2]").
	doc   ast.Node
	entry string
}

// Metadata returns m. Every manifest type embeds Meta, so this is how code
// that holds a [Manifest] reaches the envelope.
func (m *Meta) Metadata() *Meta { return m }

// Pos returns the position of the value at path (for example
// "spec.phases[1].percent") in the manifest's document. When path is not in
// the document, Pos returns the position of its nearest ancestor that is,
// and at worst the document's own position.
func (m *Meta) Pos(path string) Source {
	if m.doc == nil {
		return m.Source
	}
	if m.entry != "" {
		switch {
		case path == "metadata.name":
			path = m.entry + ".name"
		case path == "spec":
			path = m.entry
		case strings.HasPrefix(path, "spec."):
			path = m.entry + path[len("spec"):]
		}
	}
	return lookupPos(m.doc, path, m.Source)
}

// A Manifest is a value of one of the manifest types: *Artifact, *Rollout,
// *DeviceGroup, *Device, *MonitorCheck, *DeviceConfig, *SigningKey or
// *Notification, *DeviceCA or *Operator.
type Manifest interface {
	Metadata() *Meta
}

// document is the JSON (and CUE) shape of a manifest.
type document struct {
	APIVersion string   `json:"apiVersion"`
	Kind       Kind     `json:"kind"`
	Metadata   metadata `json:"metadata"`
	Spec       any      `json:"spec"`
}

type metadata struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
}

// marshal encodes a manifest in its document shape, so that the JSON of a
// Go value reads like the YAML it came from.
func marshal(m *Meta, spec any) ([]byte, error) {
	return json.Marshal(document{
		APIVersion: m.APIVersion,
		Kind:       m.Kind,
		Metadata:   metadata{Name: m.Name, Labels: m.Labels},
		Spec:       spec,
	})
}
