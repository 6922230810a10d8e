package schema

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// An Operator may open remote sessions to the devices its access lists
// (see the #Operator schema for the manifest). After [Load], an Operator
// with an SSH key holds it parsed ([Operator.SSHKey]) and its expiry as a
// time ([Operator.ExpiresAt]).
type Operator struct {
	Meta
	Spec OperatorSpec

	key     ssh.PublicKey // set by the loader from Spec.SSHPublicKey
	expires time.Time     // set by the loader from Spec.Expires
}

// OperatorSpec is the spec of an [Operator]. At least one of TokenSHA256
// and SSHPublicKey is set.
type OperatorSpec struct {
	TokenSHA256  string           `json:"tokenSHA256,omitempty"`
	SSHPublicKey string           `json:"sshPublicKey,omitempty"`
	Expires      string           `json:"expires,omitempty"`
	Access       []OperatorAccess `json:"access"`
	Limits       OperatorLimits   `json:"limits,omitzero"`
}

// OperatorAccess is one entry of an Operator's access.
type OperatorAccess struct {
	Groups       []string `json:"groups,omitempty"`
	Devices      []string `json:"devices,omitempty"`
	FileTransfer bool     `json:"fileTransfer,omitempty"`
	PortForward  bool     `json:"portForward,omitempty"`
	RecordInput  bool     `json:"recordInput,omitempty"`
}

// OperatorLimits are the limits on an Operator's sessions; zero fields
// take the defaults (see [OperatorLimits.Effective]).
type OperatorLimits struct {
	Sessions    int      `json:"sessions,omitempty"`
	IdleTimeout Duration `json:"idleTimeout,omitzero"`
	Bandwidth   ByteRate `json:"bandwidth,omitempty"`
}

// Defaults of an Operator's limits and of a device's concurrent sessions.
const (
	DefaultOperatorSessions = 2
	DefaultIdleTimeout      = 15 * time.Minute
	DefaultDeviceSessions   = 2
)

// Effective returns l with the defaults filled in: sessions 2, idle
// timeout 15 minutes; a zero Bandwidth stays zero (unlimited).
func (l OperatorLimits) Effective() OperatorLimits {
	if l.Sessions == 0 {
		l.Sessions = DefaultOperatorSessions
	}
	if l.IdleTimeout.Duration == 0 {
		l.IdleTimeout.Duration = DefaultIdleTimeout
	}
	return l
}

// MarshalJSON encodes o in the shape of its manifest.
func (o Operator) MarshalJSON() ([]byte, error) { return marshal(&o.Meta, &o.Spec) }

// SSHKey returns the operator's parsed SSH public key, nil when it has
// none (or before [Load] checked it).
func (o *Operator) SSHKey() ssh.PublicKey { return o.key }

// ExpiresAt returns when the operator's access ends; zero: never.
func (o *Operator) ExpiresAt() time.Time { return o.expires }

// Expired reports whether the operator's access has ended at now.
func (o *Operator) Expired(now time.Time) bool {
	return !o.expires.IsZero() && !now.Before(o.expires)
}

// TokenMatches reports whether token is the operator's personal access
// token (its SHA-256 is TokenSHA256).
func (o *Operator) TokenMatches(token string) bool {
	if o.Spec.TokenSHA256 == "" || token == "" {
		return false
	}
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:]) == o.Spec.TokenSHA256
}

// Operator returns the Operator called name, or nil.
func (f *Fleet) Operator(name string) *Operator { return find(f.Operators, name) }

// A ByteRate is bytes per second, written in a manifest as an integer or a
// size ("512KiB", "1MiB/s"). Zero: unlimited.
type ByteRate int64

var byteRateRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?) ?(B|KB|KiB|MB|MiB|GB|GiB)(/s)?$`)

// ParseByteRate parses a rate such as "1MiB", "512 KiB/s", "2MB" or
// "1000" (bytes per second).
func ParseByteRate(s string) (ByteRate, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 {
			return 0, fmt.Errorf("bandwidth %d must be positive", n)
		}
		return ByteRate(n), nil
	}
	m := byteRateRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("bandwidth %q: write bytes per second as an integer or a size such as \"512KiB\" or \"1MiB/s\" (B, KB, KiB, MB, MiB, GB, GiB)", s)
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	unit := map[string]float64{"B": 1, "KB": 1e3, "KiB": 1 << 10, "MB": 1e6, "MiB": 1 << 20, "GB": 1e9, "GiB": 1 << 30}[m[2]]
	v := f * unit
	if v < 1 || v > math.MaxInt64/2 {
		return 0, fmt.Errorf("bandwidth %q is out of range (1 B/s … 4 EiB/s)", s)
	}
	return ByteRate(v), nil
}

// UnmarshalJSON reads an integer or a size string.
func (r *ByteRate) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := ParseByteRate(s)
		if err != nil {
			return err
		}
		*r = v
		return nil
	}
	v, err := ParseByteRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

var sha256HexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// checkOperator checks one Operator on its own; references and unique
// tokens are checked across the fleet (checkOperatorRefs).
func (l *loader) checkOperator(o *Operator) bool {
	n := l.errs.count()
	s := &o.Spec
	if s.TokenSHA256 == "" && s.SSHPublicKey == "" {
		l.errs.at(&o.Meta, "spec", "operator %q has no credential: set tokenSHA256 (printf %%s \"$TOKEN\" | sha256sum) and/or sshPublicKey (the line of your id_ed25519.pub)", o.Name)
	}
	if t := s.TokenSHA256; t != "" && !sha256HexRE.MatchString(t) {
		msg := "tokenSHA256 must be the SHA-256 of the personal access token, 64 lowercase hex digits; compute it with: printf %s \"$TOKEN\" | sha256sum"
		switch {
		case len(t) == 64 && strings.ToLower(t) == t:
			msg += " (this has characters that are not hex)"
		case len(t) == 64:
			msg += " (write the hex in lowercase)"
		default:
			msg += fmt.Sprintf(" (this is %d characters long; if it is the token itself, it is now in the history of the repository: make a new token)", len(t))
		}
		l.errs.at(&o.Meta, "spec.tokenSHA256", "%s", msg)
	}
	if k := s.SSHPublicKey; k != "" {
		if strings.Contains(k, "PRIVATE KEY") {
			l.errs.at(&o.Meta, "spec.sshPublicKey", "THIS IS A PRIVATE KEY: never put a private key in Git. It is now in the history of this branch: consider it compromised, make a new key pair (ssh-keygen -t ed25519) and commit only the .pub line")
		} else if key, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k)); err != nil {
			l.errs.at(&o.Meta, "spec.sshPublicKey", "not an SSH public key (%v): give one line of authorized_keys format, such as the content of ~/.ssh/id_ed25519.pub", err)
		} else if strings.TrimSpace(string(rest)) != "" {
			l.errs.at(&o.Meta, "spec.sshPublicKey", "give exactly one SSH public key (one line); this holds more")
		} else {
			o.key = key
		}
	}
	if e := s.Expires; e != "" {
		t, err := time.Parse(time.RFC3339, e)
		if err != nil {
			l.errs.at(&o.Meta, "spec.expires", "expires %q is not an RFC 3339 time: write it like 2027-03-31T18:00:00Z", e)
		} else {
			o.expires = t
		}
	}
	if len(s.Access) == 0 {
		l.errs.at(&o.Meta, "spec.access", "operator %q may reach no device: list groups or devices under access", o.Name)
	}
	for i, a := range s.Access {
		at := fmt.Sprintf("spec.access[%d]", i)
		if len(a.Groups) == 0 && len(a.Devices) == 0 {
			l.errs.at(&o.Meta, at, "this entry names no devices: set groups and/or devices")
		}
		l.checkUnique(&o.Meta, at+".groups", a.Groups)
		l.checkUnique(&o.Meta, at+".devices", a.Devices)
	}
	if d := s.Limits.IdleTimeout.Duration; s.Limits.IdleTimeout != (Duration{}) && d <= 0 {
		l.errs.at(&o.Meta, "spec.limits.idleTimeout", "idleTimeout must be positive (default 15m)")
	}
	return l.errs.count() == n
}

// checkOperatorRefs checks the Operators against the fleet: the groups
// and devices they name exist (a device may also be one a DeviceCA
// names), and no two share a token.
func (l *loader) checkOperatorRefs(ix *index) {
	f := l.fleet
	tokens := map[string]*Operator{}
	for i := range f.Operators {
		o := &f.Operators[i]
		for j, a := range o.Spec.Access {
			at := fmt.Sprintf("spec.access[%d]", j)
			refs(l, &o.Meta, at+".groups", KindDeviceGroup, a.Groups, ix.groups)
			for k, d := range a.Devices {
				if !caDevice(f, d) {
					ref(l, &o.Meta, fmt.Sprintf("%s.devices[%d]", at, k), KindDevice, d, ix.devices)
				}
			}
		}
		if t := o.Spec.TokenSHA256; t != "" {
			if first, ok := tokens[t]; ok {
				l.errs.at(&o.Meta, "spec.tokenSHA256", "operator %q has the same token as operator %q (%s): each operator needs a token of their own", o.Name, first.Name, first.Source)
				continue
			}
			tokens[t] = o
		}
	}
}

// caDevice reports whether a DeviceCA of f names device: "<CA>-<value>".
func caDevice(f *Fleet, device string) bool {
	for i := range f.DeviceCAs {
		if rest, ok := strings.CutPrefix(device, f.DeviceCAs[i].Name+"-"); ok && rest != "" {
			return true
		}
	}
	return false
}
