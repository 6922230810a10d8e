package deviceapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"
)

// Limits on what devices send. Requests beyond them are refused (413 for a
// body too large, 400 for the rest) and change nothing.
const (
	MaxAuthBody      = 64 << 10 // auth_requests body
	MaxIdentityBytes = 4 << 10  // id_data (it travels in every token)
	MaxAttributes    = 256      // identity or inventory attributes
	MaxNextBody      = 64 << 10 // deployments/next body
	MaxStatusBody    = 4 << 10  // status report
	MaxInventoryBody = 64 << 10 // inventory PUT/PATCH body
	maxValueBytes    = 4 << 10  // one identity/inventory/provides value
	maxNameBytes     = 256      // one attribute name
	maxPubKeyBytes   = 16 << 10 // PEM public key
	maxTenantToken   = 8 << 10
)

// ErrBadRequest marks a request the device got wrong; the message says how.
var ErrBadRequest = errors.New("deviceapi: bad request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
}

// AuthRequest is the body of POST /api/devices/v1/authentication/auth_requests.
// IDData is a JSON object encoded as a string (the Mender client sends the
// output of its identity script that way).
type AuthRequest struct {
	IDData      string `json:"id_data"`
	PubKey      string `json:"pubkey"`
	TenantToken string `json:"tenant_token,omitempty"`
}

// Attributes are identity or inventory attributes flattened to strings: a
// list value (an identity script that prints a key twice) is joined with
// ",", numbers and booleans keep their JSON spelling.
type Attributes map[string]string

// Identity is a device's id_data. Values keep their JSON type: a manifest's
// identity (strings) matches only attributes whose values are JSON strings
// equal to its own; a list, number, boolean or null is never flattened into
// a string, so {"mac": ["a"]} is not {"mac": "a"} and matches no identity
// in Git (a device that sends one can still be admitted by its key alone).
type Identity struct {
	// Strings holds the attributes whose values are JSON strings.
	Strings Attributes
	// Typed reports an attribute whose value is not a string.
	Typed bool
	canon []byte
	n     int
}

// Canonical is the identity as JSON with sorted keys and every value of
// its own type: the same id_data always gives the same bytes. For an
// identity of strings it equals Strings.Canonical().
func (i Identity) Canonical() []byte { return i.canon }

// ID is the device ID of this identity (see DeviceID).
func (i Identity) ID() string {
	sum := sha256.Sum256(i.canon)
	return fmt.Sprintf("%x", sum[:16])
}

// Len is the number of attributes.
func (i Identity) Len() int { return i.n }

// decodeIdentity reads id_data: {"name": value, …}, each value a string,
// number, boolean, null or a list of those, kept as such.
func decodeIdentity(b []byte) (Identity, error) {
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return Identity{}, badRequest("id_data is not a JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Identity{}, badRequest("id_data is not a JSON object: trailing data after the JSON value")
	}
	if raw == nil {
		return Identity{}, badRequest("id_data is not a JSON object: null")
	}
	if len(raw) == 0 {
		return Identity{}, badRequest("id_data has no attributes")
	}
	if len(raw) > MaxAttributes {
		return Identity{}, badRequest("id_data has %d attributes (max %d)", len(raw), MaxAttributes)
	}
	id := Identity{Strings: make(Attributes, len(raw)), n: len(raw)}
	for name, v := range raw {
		if err := checkName(name); err != nil {
			return Identity{}, badRequest("id_data: %v", err)
		}
		// The value's size and shape are checked as for any attribute.
		if _, err := flattenValue(v); err != nil {
			return Identity{}, badRequest("id_data attribute %q: %v", name, err)
		}
		if s, ok := v.(string); ok {
			id.Strings[name] = s
		} else {
			id.Typed = true
		}
	}
	id.canon, _ = json.Marshal(raw) // sorted keys; json.Number as spelled
	return id, nil
}

// DecodeAuthRequest parses an auth request body (the exact bytes the
// signature covers) and its identity.
func DecodeAuthRequest(body []byte) (AuthRequest, Identity, error) {
	var req AuthRequest
	if err := strictJSON(body, &req); err != nil {
		return AuthRequest{}, Identity{}, badRequest("auth request is not a JSON object with id_data, pubkey and tenant_token: %v", err)
	}
	switch {
	case req.IDData == "":
		return AuthRequest{}, Identity{}, badRequest("auth request without id_data")
	case len(req.IDData) > MaxIdentityBytes:
		return AuthRequest{}, Identity{}, badRequest("id_data is %d bytes (max %d)", len(req.IDData), MaxIdentityBytes)
	case req.PubKey == "":
		return AuthRequest{}, Identity{}, badRequest("auth request without pubkey")
	case len(req.PubKey) > maxPubKeyBytes:
		return AuthRequest{}, Identity{}, badRequest("pubkey is %d bytes (max %d)", len(req.PubKey), maxPubKeyBytes)
	case len(req.TenantToken) > maxTenantToken:
		return AuthRequest{}, Identity{}, badRequest("tenant_token is %d bytes (max %d)", len(req.TenantToken), maxTenantToken)
	}
	id, err := decodeIdentity([]byte(req.IDData))
	if err != nil {
		return AuthRequest{}, Identity{}, err
	}
	return req, id, nil
}

// decodeAttributeObject reads {"name": value, …} where each value is a
// string, number, boolean or a list of those.
func decodeAttributeObject(b []byte, what string) (Attributes, error) {
	// One pass: numbers stay as spelled (json.Number), every value is then
	// flattened the way flatten does for raw JSON.
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, badRequest("%s is not a JSON object: %v", what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest("%s is not a JSON object: trailing data after the JSON value", what)
	}
	if raw == nil {
		return nil, badRequest("%s is not a JSON object: null", what)
	}
	if len(raw) > MaxAttributes {
		return nil, badRequest("%s has %d attributes (max %d)", what, len(raw), MaxAttributes)
	}
	out := make(Attributes, len(raw))
	for name, v := range raw {
		if err := checkName(name); err != nil {
			return nil, badRequest("%s: %v", what, err)
		}
		s, err := flattenValue(v)
		if err != nil {
			return nil, badRequest("%s attribute %q: %v", what, name, err)
		}
		out[name] = s
	}
	return out, nil
}

// flattenValue is flatten for a value already decoded (with UseNumber): a
// string, number or boolean as spelled, null as "", a list of those joined
// with commas.
func flattenValue(v any) (string, error) {
	if list, ok := v.([]any); ok {
		parts := make([]string, 0, len(list))
		for _, e := range list {
			s, err := scalarValue(e)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return checkValue(strings.Join(parts, ","))
	}
	s, err := scalarValue(v)
	if err != nil {
		return "", err
	}
	return checkValue(s)
}

func scalarValue(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case json.Number:
		return string(v), nil
	case bool:
		if v {
			return "true", nil
		}
		return "false", nil
	case nil:
		return "", nil
	}
	return "", errors.New("value must be a string, number, boolean or a list of those")
}

func checkName(name string) error {
	if name == "" || len(name) > maxNameBytes || !utf8.ValidString(name) {
		return fmt.Errorf("attribute name %q must be 1…%d bytes of UTF-8", name, maxNameBytes)
	}
	return nil
}

// flatten turns a JSON scalar or list of scalars into one string.
func flatten(v json.RawMessage) (string, error) {
	v = bytes.TrimSpace(v)
	if len(v) > 0 && v[0] == '[' {
		var list []json.RawMessage
		if err := json.Unmarshal(v, &list); err != nil {
			return "", err
		}
		parts := make([]string, 0, len(list))
		for _, e := range list {
			s, err := scalar(e)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return checkValue(strings.Join(parts, ","))
	}
	s, err := scalar(v)
	if err != nil {
		return "", err
	}
	return checkValue(s)
}

func scalar(v json.RawMessage) (string, error) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return "", errors.New("empty value")
	}
	switch v[0] {
	case '"':
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", err
		}
		return s, nil
	case '{', '[':
		return "", errors.New("value must be a string, number, boolean or a list of those")
	case 'n':
		return "", nil // null
	}
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		return "", err
	}
	return string(v), nil // number or boolean, as spelled
}

func checkValue(s string) (string, error) {
	if len(s) > maxValueBytes {
		return "", fmt.Errorf("value is %d bytes (max %d)", len(s), maxValueBytes)
	}
	return s, nil
}

// Canonical encodes a as JSON with sorted keys: the same attributes always
// give the same bytes.
func (a Attributes) Canonical() []byte {
	b, _ := json.Marshal(map[string]string(a)) // maps marshal with sorted keys
	return b
}

// NextRequest is what a device says when it asks for its next deployment:
// its device type, the artifact it runs, and the rest of its provides.
type NextRequest struct {
	DeviceType   string
	ArtifactName string
	Provides     Attributes // every provide, including artifact_name and device_type
}

// DecodeNextV2 parses the body of POST v2 …/deployments/next:
// {"device_provides": {...}, "update_control_map": bool}.
func DecodeNextV2(body []byte) (NextRequest, error) {
	var req struct {
		DeviceProvides   map[string]any `json:"device_provides"`
		UpdateControlMap bool           `json:"update_control_map"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return NextRequest{}, badRequest("body is not {\"device_provides\": {...}}: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return NextRequest{}, badRequest("body is not {\"device_provides\": {...}}: trailing data after the JSON value")
	}
	if req.DeviceProvides == nil {
		return NextRequest{}, badRequest("body has no device_provides")
	}
	if len(req.DeviceProvides) > MaxAttributes {
		return NextRequest{}, badRequest("device_provides has %d attributes (max %d)", len(req.DeviceProvides), MaxAttributes)
	}
	p := make(Attributes, len(req.DeviceProvides))
	for name, v := range req.DeviceProvides {
		if err := checkName(name); err != nil {
			return NextRequest{}, badRequest("device_provides: %v", err)
		}
		s, err := flattenValue(v)
		if err != nil {
			return NextRequest{}, badRequest("device_provides attribute %q: %v", name, err)
		}
		p[name] = s
	}
	r := NextRequest{DeviceType: p["device_type"], ArtifactName: p["artifact_name"], Provides: p}
	return r, r.check()
}

// DecodeNextV1 parses the body of POST v1 …/deployments/next: the provides
// as a flat object.
func DecodeNextV1(body []byte) (NextRequest, error) { return decodeProvides(body) }

// NextFromQuery builds a request from GET v1 …/next?artifact_name=&device_type=.
func NextFromQuery(artifactName, deviceType string) (NextRequest, error) {
	if len(artifactName) > maxValueBytes || len(deviceType) > maxValueBytes {
		return NextRequest{}, badRequest("query values too long")
	}
	req := NextRequest{DeviceType: deviceType, ArtifactName: artifactName, Provides: Attributes{}}
	if artifactName != "" {
		req.Provides["artifact_name"] = artifactName
	}
	if deviceType != "" {
		req.Provides["device_type"] = deviceType
	}
	return req, req.check()
}

func decodeProvides(b []byte) (NextRequest, error) {
	p, err := decodeAttributeObject(b, "device_provides")
	if err != nil {
		return NextRequest{}, err
	}
	req := NextRequest{DeviceType: p["device_type"], ArtifactName: p["artifact_name"], Provides: p}
	return req, req.check()
}

func (r NextRequest) check() error {
	if r.DeviceType == "" {
		return badRequest("device_type is required")
	}
	return nil
}

// StatusReport is the body of PUT …/deployments/{id}/status.
type StatusReport struct {
	Status   string `json:"status"`
	SubState string `json:"substate,omitempty"`
}

// Device statuses the Mender device API defines.
const (
	StatusDownloading      = "downloading"
	StatusInstalling       = "installing"
	StatusRebooting        = "rebooting"
	StatusPauseInstall     = "pause_before_installing"
	StatusPauseCommit      = "pause_before_committing"
	StatusPauseReboot      = "pause_before_rebooting"
	StatusSuccess          = "success"
	StatusFailure          = "failure"
	StatusAlreadyInstalled = "already-installed"
	StatusNoArtifact       = "noartifact"
)

var knownStatuses = map[string]bool{
	StatusDownloading: true, StatusInstalling: true, StatusRebooting: true,
	StatusPauseInstall: true, StatusPauseCommit: true, StatusPauseReboot: true,
	StatusSuccess: true, StatusFailure: true, StatusAlreadyInstalled: true, StatusNoArtifact: true,
}

// DecodeStatus parses a status report.
func DecodeStatus(body []byte) (StatusReport, error) {
	var r StatusReport
	if err := strictJSON(body, &r); err != nil {
		return StatusReport{}, badRequest("status report is not {\"status\": …}: %v", err)
	}
	if !knownStatuses[r.Status] {
		return StatusReport{}, badRequest("unknown status %q", r.Status)
	}
	if len(r.SubState) > 200 {
		r.SubState = r.SubState[:200]
	}
	return r, nil
}

// LogMessage is one line of a deployment log.
type LogMessage struct {
	Timestamp string `json:"timestamp"`
	Level     string `json:"level"`
	Message   string `json:"message"`
}

// DecodeLog parses the body of PUT …/deployments/{id}/log.
func DecodeLog(body []byte) ([]LogMessage, error) {
	var r struct {
		Messages []LogMessage `json:"messages"`
	}
	if err := strictJSON(body, &r); err != nil {
		return nil, badRequest("deployment log is not {\"messages\": [...]}: %v", err)
	}
	if r.Messages == nil {
		return nil, badRequest("deployment log without messages")
	}
	return r.Messages, nil
}

// InventoryAttribute is one attribute of PUT/PATCH …/inventory/device/attributes.
type InventoryAttribute struct {
	Name        string          `json:"name"`
	Value       json.RawMessage `json:"value"`
	Description string          `json:"description,omitempty"`
}

// DecodeInventory parses an inventory body into an object name → value,
// each value a string, number, boolean or list of those, as sent. A name
// given twice keeps its last value.
func DecodeInventory(body []byte) (map[string]json.RawMessage, error) {
	var attrs []InventoryAttribute
	if err := strictJSON(body, &attrs); err != nil {
		return nil, badRequest("inventory is not [{\"name\": …, \"value\": …}]: %v", err)
	}
	if len(attrs) > MaxAttributes {
		return nil, badRequest("inventory has %d attributes (max %d)", len(attrs), MaxAttributes)
	}
	out := make(map[string]json.RawMessage, len(attrs))
	for _, a := range attrs {
		if err := checkName(a.Name); err != nil {
			return nil, badRequest("inventory: %v", err)
		}
		if len(a.Value) == 0 {
			return nil, badRequest("inventory attribute %q has no value", a.Name)
		}
		if _, err := flatten(a.Value); err != nil {
			return nil, badRequest("inventory attribute %q: %v", a.Name, err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, a.Value); err != nil {
			return nil, badRequest("inventory attribute %q: %v", a.Name, err)
		}
		out[a.Name] = compact.Bytes()
	}
	return out, nil
}

// InventoryAttributes flattens a stored inventory object for selectors.
// Malformed input gives what could be read.
func InventoryAttributes(inv json.RawMessage) Attributes {
	if len(inv) == 0 {
		return Attributes{}
	}
	var raw map[string]json.RawMessage
	if json.Unmarshal(inv, &raw) != nil {
		return Attributes{}
	}
	out := make(Attributes, len(raw))
	for k, v := range raw {
		if s, err := flatten(v); err == nil {
			out[k] = s
		}
	}
	return out
}

// encodeInventory marshals an inventory object with sorted keys.
func encodeInventory(inv map[string]json.RawMessage) []byte {
	keys := make([]string, 0, len(inv))
	for k := range inv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		b.Write(inv[k])
	}
	b.WriteByte('}')
	return b.Bytes()
}

// strictJSON decodes exactly one JSON value into v.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}
