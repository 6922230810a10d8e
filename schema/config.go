package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"
)

// A DeviceConfig is key/value configuration for the devices of its target.
// When several DeviceConfigs set a key for one device, the most specific
// target wins: devices over groups over the whole fleet. Two DeviceConfigs
// of equal specificity that may apply to one device must not set a key to
// different values (or to different secrets).
//
// A key is either a value, written in Git in the clear, or a secret, of
// which Git holds only where the controller finds it (see [ConfigSecret]).
// The controller resolves secrets when it loads a commit and gives their
// values to the targeted devices only.
type DeviceConfig struct {
	Meta
	Spec DeviceConfigSpec
}

// DeviceConfigSpec is the spec of a [DeviceConfig]. Its Target sets exactly
// one of All, Groups and Devices (no Selector). At least one of Values and
// Secrets is set, and no key is in both.
type DeviceConfigSpec struct {
	Target  Target  `json:"target"`
	Values  Values  `json:"values,omitempty"`
	Secrets Secrets `json:"secrets,omitempty"`
}

// MarshalJSON encodes c in the shape of its manifest.
func (c DeviceConfig) MarshalJSON() ([]byte, error) { return marshal(&c.Meta, &c.Spec) }

// Specificity orders the scopes of a DeviceConfig target.
type Specificity int

// The specificities, least specific first.
const (
	SpecificityFleet Specificity = iota
	SpecificityGroup
	SpecificityDevice
)

// String returns "fleet", "group" or "device".
func (s Specificity) String() string {
	switch s {
	case SpecificityFleet:
		return "fleet"
	case SpecificityGroup:
		return "group"
	case SpecificityDevice:
		return "device"
	}
	return "Specificity(" + strconv.Itoa(int(s)) + ")"
}

// Specificity returns how specific the target of c is.
func (c *DeviceConfig) Specificity() Specificity {
	switch {
	case len(c.Spec.Target.Devices) > 0:
		return SpecificityDevice
	case len(c.Spec.Target.Groups) > 0:
		return SpecificityGroup
	}
	return SpecificityFleet
}

// ValuePath returns the field path of the value key in a DeviceConfig, as
// errors and [Meta.Pos] write it: spec.values.log_level,
// spec.values["wifi-ssid"].
func ValuePath(key string) string { return formatPath([]string{"spec", "values", key}) }

// SecretPath returns the field path of the secret key in a DeviceConfig:
// spec.secrets["wifi-pass"].
func SecretPath(key string) string { return formatPath([]string{"spec", "secrets", key}) }

// Values are configuration values. Devices receive strings; a manifest may
// write numbers and booleans, which are formatted as strings.
type Values map[string]string

// UnmarshalJSON implements json.Unmarshaler.
func (v *Values) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*v = make(Values, len(raw))
	for k, r := range raw {
		s, err := scalarString(r)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		(*v)[k] = s
	}
	return nil
}

// Secrets are the secret configuration values of a DeviceConfig, by key:
// where the controller finds each value.
type Secrets map[string]ConfigSecret

// A ConfigSecret says where the controller finds a secret value. Exactly
// one field is set:
//
//   - File names a file in the controller's secrets directory
//     (gitfleet serve --config-secrets-dir): a plain file name, without a
//     directory;
//   - Age is an ASCII-armored age ciphertext (`age -a -r RECIPIENT`) of the
//     value, which the controller decrypts with its identity
//     (--config-age-identity), the way Flux decrypts SOPS files.
//
// Neither is the secret itself: a ConfigSecret may be printed, but plans
// print only its source (see [ConfigSecret.Source]), a ciphertext being
// long and meaningless to a reviewer.
type ConfigSecret struct {
	File string `json:"file,omitempty"`
	Age  string `json:"age,omitempty"`
}

// The sources of a [ConfigSecret].
const (
	SecretFile = "file"
	SecretAge  = "age"
)

// Source returns SecretFile or SecretAge, or "" when neither is set.
func (s ConfigSecret) Source() string {
	switch {
	case s.File != "":
		return SecretFile
	case s.Age != "":
		return SecretAge
	}
	return ""
}

// Equal reports whether s and t refer to the same secret: the same file,
// or the same ciphertext (surrounding white space aside). Encrypting a
// value again gives another ciphertext, so Equal is false for it.
func (s ConfigSecret) Equal(t ConfigSecret) bool {
	return s.File == t.File && strings.TrimSpace(s.Age) == strings.TrimSpace(t.Age)
}

// Describe words s for messages, without the ciphertext: `the secret file
// "wifi-pass"`, or "an age secret".
func (s ConfigSecret) Describe() string {
	if s.File != "" {
		return fmt.Sprintf("the secret file %q", s.File)
	}
	return "an age secret"
}

// CheckSecretFileName checks the name of a file of the controller's
// secrets directory: a plain file name, without a directory, not hidden.
func CheckSecretFileName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("%q: name a file of the controller's secrets directory (--config-secrets-dir) without a directory", name)
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("%q: a secret file name must not start with '.'", name)
	case len(name) > 255:
		return fmt.Errorf("secret file name of %d bytes; at most 255", len(name))
	case strings.ContainsFunc(name, func(r rune) bool { return r < ' ' || r == 0x7f }):
		return fmt.Errorf("%q: control characters in a file name", name)
	}
	return nil
}

// MaxAgeSecret bounds the armored ciphertext of one age secret.
const MaxAgeSecret = 128 << 10

// CheckAgeArmor checks, without any key, that s is an ASCII-armored age
// file (the output of `age -a -r RECIPIENT`) encrypted to recipients, not
// to a passphrase. Its errors never quote s: a value pasted here by
// mistake may be a plaintext.
func CheckAgeArmor(s string) error {
	const want = "want the output of `age -a -r RECIPIENT`, from " + armor.Header + " to " + armor.Footer
	if len(s) > MaxAgeSecret {
		return fmt.Errorf("age ciphertext of %d bytes; at most %d", len(s), MaxAgeSecret)
	}
	if first, _, _ := strings.Cut(strings.TrimLeft(s, " \t\r\n"), "\n"); strings.TrimRight(first, "\r") != armor.Header {
		return errors.New("not an ASCII-armored age file: " + want)
	}
	bin, err := io.ReadAll(armor.NewReader(strings.NewReader(s)))
	if err != nil {
		return errors.New("malformed ASCII armor (a line changed, cut or re-wrapped?): " + want)
	}
	hdr, err := age.ExtractHeader(bytes.NewReader(bin))
	if err != nil {
		return errors.New("not an age file: the armor holds no valid age header; " + want)
	}
	for line := range strings.SplitSeq(string(hdr), "\n") {
		if strings.HasPrefix(line, "-> scrypt ") {
			return errors.New("encrypted with a passphrase (age -p), which the controller cannot use: encrypt to the controller's recipient with `age -a -r RECIPIENT`")
		}
	}
	return nil
}
