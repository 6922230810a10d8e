package schema

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A DeviceCA admits every device holding a client certificate it issued
// (see the #DeviceCA schema for the manifest). After [Load] it holds the
// parsed CA certificates and the set of revoked serials: [DeviceCA.Pool],
// [DeviceCA.Revoked], [DeviceCA.Identify].
type DeviceCA struct {
	Meta
	Spec DeviceCASpec

	ca *caData // set by the loader once the CA and its files are checked
}

// DeviceCASpec is the spec of a [DeviceCA]. Exactly one of Certificate and
// CertificateFile is written in the manifest; after [Load], Certificate
// holds the PEM either way.
type DeviceCASpec struct {
	Certificate     string            `json:"certificate,omitempty"`
	CertificateFile string            `json:"certificateFile,omitempty"`
	Identity        map[string]string `json:"identity"`
	NameAttribute   string            `json:"nameAttribute,omitempty"`
	DeviceType      string            `json:"deviceType,omitempty"`
	Revoked         Serials           `json:"revoked,omitempty"`
	RevokedFile     string            `json:"revokedFile,omitempty"`
}

// Serials are serial numbers as a manifest writes them: strings (see
// [ParseSerial]), or non-negative integers, which decode as their decimal
// digits.
type Serials []string

// UnmarshalJSON reads a list of strings and non-negative integers.
func (s *Serials) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	out := make(Serials, len(raw))
	for i, r := range raw {
		if len(r) > 0 && r[0] == '"' {
			if err := json.Unmarshal(r, &out[i]); err != nil {
				return err
			}
			continue
		}
		for _, c := range r {
			if c < '0' || c > '9' {
				return fmt.Errorf("serial %s is not a string nor a non-negative integer", r)
			}
		}
		out[i] = string(r)
	}
	*s = out
	return nil
}

// The certificate fields a DeviceCA's identity attributes come from.
const (
	CertCommonName         = "subject.commonName"
	CertSubjectSerial      = "subject.serialNumber"
	CertOrganizationalUnit = "subject.organizationalUnit"
	CertSerialNumber       = "certificate.serialNumber"
)

// Limits on a DeviceCA's files.
const (
	maxCAFile      = 256 << 10
	maxRevokedFile = 32 << 20 // about 800,000 serials of 20 bytes
	maxSerialHex   = 40       // RFC 5280: at most 20 octets
)

type caData struct {
	certs   []*x509.Certificate
	pool    *x509.CertPool
	revoked map[string]struct{}
}

// MarshalJSON encodes c in the shape of its manifest.
func (c DeviceCA) MarshalJSON() ([]byte, error) { return marshal(&c.Meta, &c.Spec) }

// Certificates returns the CA certificates (nil before [Load] checked
// them).
func (c *DeviceCA) Certificates() []*x509.Certificate {
	if c.ca == nil {
		return nil
	}
	return c.ca.certs
}

// Pool returns the CA certificates as a pool to verify device
// certificates with (nil before [Load] checked them).
func (c *DeviceCA) Pool() *x509.CertPool {
	if c.ca == nil {
		return nil
	}
	return c.ca.pool
}

// Revoked reports whether the certificate serial number serial, in the
// notation of [SerialHex], is revoked. It does not allocate.
func (c *DeviceCA) Revoked(serial string) bool {
	if c.ca == nil {
		return false
	}
	_, ok := c.ca.revoked[serial]
	return ok
}

// RevokedCount returns how many distinct serials are revoked.
func (c *DeviceCA) RevokedCount() int {
	if c.ca == nil {
		return 0
	}
	return len(c.ca.revoked)
}

// SerialHex writes a certificate serial number as DeviceCA revocation sets
// hold it: lowercase hex without leading zeros.
func SerialHex(n *big.Int) string { return n.Text(16) }

// ParseSerial reads a serial number as revoked lists write it: decimal
// digits, or hex with a 0x prefix, or colon-separated hex bytes (as
// openssl prints them), and returns it in the notation of [SerialHex].
func ParseSerial(s string) (string, error) {
	switch {
	case s == "":
		return "", fmt.Errorf("empty serial number")
	case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
		return hexSerial(s, s[2:])
	case strings.IndexByte(s, ':') >= 0:
		var b strings.Builder
		for part := range strings.SplitSeq(s, ":") {
			if len(part) == 0 || len(part) > 2 {
				return "", fmt.Errorf("serial number %q: colon-separated bytes are one or two hex digits each", s)
			}
			if len(part) == 1 {
				b.WriteByte('0')
			}
			b.WriteString(part)
		}
		return hexSerial(s, b.String())
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < '0' || c > '9' {
			return "", fmt.Errorf("serial number %q is neither decimal nor hex: write hex as 0x%s (or as colon-separated bytes), decimal as digits only", s, s)
		}
	}
	if len(s) <= 18 {
		v, _ := strconv.ParseUint(s, 10, 64)
		return strconv.FormatUint(v, 16), nil
	}
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		return "", fmt.Errorf("serial number %q is not a decimal number", s)
	}
	if h := n.Text(16); len(h) <= maxSerialHex {
		return h, nil
	}
	return "", fmt.Errorf("serial number %q is longer than 20 bytes", s)
}

// hexSerial checks the hex digits h of the serial s and returns them
// lowercase without leading zeros.
func hexSerial(s, h string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("serial number %q has no digits", s)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return "", fmt.Errorf("serial number %q: %q is not a hex digit", s, string(c))
		}
	}
	h = strings.TrimLeft(h, "0")
	if h == "" {
		return "0", nil
	}
	if len(h) > maxSerialHex {
		return "", fmt.Errorf("serial number %q is longer than 20 bytes", s)
	}
	return strings.ToLower(h), nil
}

// deviceNameRE is #Name.
var deviceNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$`)

// Identify returns the identity attributes a device certificate cert of
// this CA carries (spec.identity) and the device's name,
// "<metadata.name>-<value of the name attribute>". It does not verify the
// certificate: see [DeviceCA.Pool]. An error says which field is missing
// or unusable.
func (c *DeviceCA) Identify(cert *x509.Certificate) (identity map[string]string, name string, err error) {
	identity = make(map[string]string, len(c.Spec.Identity))
	for attr, field := range c.Spec.Identity {
		var v string
		switch field {
		case CertCommonName:
			v = cert.Subject.CommonName
		case CertSubjectSerial:
			v = cert.Subject.SerialNumber
		case CertOrganizationalUnit:
			if len(cert.Subject.OrganizationalUnit) > 1 {
				return nil, "", fmt.Errorf("certificate has %d subject organizationalUnits; identity attribute %s needs exactly one", len(cert.Subject.OrganizationalUnit), attr)
			}
			if len(cert.Subject.OrganizationalUnit) == 1 {
				v = cert.Subject.OrganizationalUnit[0]
			}
		case CertSerialNumber:
			v = SerialHex(cert.SerialNumber)
		}
		if v == "" {
			return nil, "", fmt.Errorf("certificate has no %s (identity attribute %s)", field, attr)
		}
		identity[attr] = v
	}
	name = c.Name + "-" + identity[c.nameAttribute()]
	if !deviceNameRE.MatchString(name) {
		return nil, "", fmt.Errorf("device name %q (from identity attribute %s) is not a valid name: letters, digits, \".\", \"_\" and \"-\", at most 128 characters", name, c.nameAttribute())
	}
	return identity, name, nil
}

// nameAttribute is spec.nameAttribute, or the only identity attribute.
func (c *DeviceCA) nameAttribute() string {
	if c.Spec.NameAttribute != "" {
		return c.Spec.NameAttribute
	}
	for k := range c.Spec.Identity {
		return k
	}
	return ""
}

// checkDeviceCAs checks the DeviceCAs of the fleet: their names, their
// certificates and revocation lists (reading certificateFile and
// revokedFile, which change without the manifest changing, so this runs on
// every load, never from a cache). A DeviceCA with an error is dropped from
// the fleet.
func (l *loader) checkDeviceCAs(now time.Time) {
	f := l.fleet
	type where struct {
		name string
		src  Source
	}
	seen := map[string]Source{}
	certs := map[string]where{} // by the CA certificate's DER
	keep := f.DeviceCAs[:0:0]
	for i := range f.DeviceCAs {
		c := f.DeviceCAs[i] // a copy: a cached file's value is not changed
		if first, ok := seen[c.Name]; ok {
			l.errs.at(&c.Meta, "metadata.name", "duplicate %s name %q; first declared at %s", c.Kind, c.Name, first)
			continue
		}
		seen[c.Name] = c.Source
		data, ok := l.checkDeviceCA(&c, now)
		if !ok {
			continue
		}
		dup := false
		for _, cert := range data.certs {
			if other, ok := certs[string(cert.Raw)]; ok {
				l.errs.at(&c.Meta, "spec", "the same CA certificate (%s) as DeviceCA %s at %s: a device certificate must name one DeviceCA", cert.Subject, other.name, other.src)
				dup = true
			}
		}
		if dup {
			continue
		}
		c.ca = data
		keep = append(keep, c)
		for _, cert := range data.certs {
			certs[string(cert.Raw)] = where{c.Name, c.Source}
		}
	}
	f.DeviceCAs = keep
	l.checkCANames()
}

// checkCANames reports names a DeviceCA's devices could also have: a
// DeviceCA names the devices it admits "<its name>-<value>", so a Device
// declared with such a name, or another DeviceCA whose names begin the
// same way ("line" and "line-b": is line-b-7 the first's b-7 or the
// second's 7?), would make one name two devices — to rollouts, groups and
// operators' access alike.
func (l *loader) checkCANames() {
	cas := l.fleet.DeviceCAs
	if len(cas) == 0 {
		return
	}
	for i := range cas {
		for j := range cas {
			if i != j && strings.HasPrefix(cas[j].Name+"-", cas[i].Name+"-") {
				l.errs.at(&cas[j].Meta, "metadata.name", "DeviceCA %q names its devices %s-…, which DeviceCA %q (%s) names its devices too (%s-…): give the DeviceCAs names that do not begin with one another followed by \"-\"",
					cas[j].Name, cas[j].Name, cas[i].Name, cas[i].Source, cas[i].Name)
			}
		}
	}
	// Devices shared with an earlier load were checked against the same
	// names already when the DeviceCAs were not renamed (a commit that
	// changes a rollout reads no device name).
	names := make([]string, len(cas))
	for i := range cas {
		names[i] = cas[i].Name
	}
	slices.Sort(names)
	sh := l.shared
	if sh != nil && sh.caNames != nil && slices.Equal(sh.caNames, names) {
		return
	}
	n := l.errs.count()
	for i := range l.fleet.Devices {
		d := &l.fleet.Devices[i]
		for j := range cas {
			if rest, ok := strings.CutPrefix(d.Name, cas[j].Name+"-"); ok && rest != "" {
				l.errs.at(&d.Meta, "metadata.name", "device %q has a name DeviceCA %q (%s) gives the devices it admits (%s-<%s>): rename the device, or the DeviceCA",
					d.Name, cas[j].Name, cas[j].Source, cas[j].Name, cas[j].nameAttribute())
			}
		}
	}
	if sh != nil && l.errs.count() == n {
		sh.caNames = names
	}
}

// checkDeviceCA checks one DeviceCA and returns its parsed data.
func (l *loader) checkDeviceCA(c *DeviceCA, now time.Time) (*caData, bool) {
	s := &c.Spec
	n := l.errs.count()
	if len(s.Identity) == 0 {
		l.errs.at(&c.Meta, "spec.identity", "name at least one identity attribute and the certificate field it comes from (for example serial: subject.commonName)")
	}
	for _, k := range slices.Sorted(maps.Keys(s.Identity)) {
		if k == "" {
			l.errs.at(&c.Meta, "spec.identity", "an identity attribute name is empty")
		}
	}
	switch {
	case s.NameAttribute != "":
		if _, ok := s.Identity[s.NameAttribute]; !ok {
			l.errs.at(&c.Meta, "spec.nameAttribute", "nameAttribute %q is not one of the identity attributes (%s)", s.NameAttribute, strings.Join(slices.Sorted(maps.Keys(s.Identity)), ", "))
		}
	case len(s.Identity) > 1:
		l.errs.at(&c.Meta, "spec.nameAttribute", "identity has %d attributes: set nameAttribute to the one that names the device", len(s.Identity))
	}
	pemData, at := []byte(s.Certificate), "spec.certificate"
	switch {
	case s.Certificate != "" && s.CertificateFile != "":
		l.errs.at(&c.Meta, "spec.certificateFile", "set certificate or certificateFile, not both")
		return nil, false
	case s.Certificate == "" && s.CertificateFile == "":
		l.errs.at(&c.Meta, "spec", "set certificate (PEM) or certificateFile")
		return nil, false
	case s.CertificateFile != "":
		at = "spec.certificateFile"
		l.fsMu.Lock()
		b, err := readRepoFile(l.fsys, s.CertificateFile, maxCAFile)
		l.fsMu.Unlock()
		if err != nil {
			l.errs.at(&c.Meta, at, "%v", err)
			return nil, false
		}
		pemData = b
		s.Certificate = string(b)
	}
	data := &caData{pool: x509.NewCertPool(), revoked: map[string]struct{}{}}
	certs, err := parseCACerts(pemData, now)
	if err != nil {
		where := ""
		if s.CertificateFile != "" {
			where = s.CertificateFile + ": "
		}
		l.errs.at(&c.Meta, at, "%s%v", where, err)
		return nil, false
	}
	data.certs = certs
	for _, cert := range certs {
		data.pool.AddCert(cert)
	}
	for i, r := range s.Revoked {
		h, err := ParseSerial(strings.TrimSpace(r))
		if err != nil {
			l.errs.at(&c.Meta, "spec.revoked["+strconv.Itoa(i)+"]", "%v", err)
			continue
		}
		data.revoked[h] = struct{}{}
	}
	if s.RevokedFile != "" {
		l.fsMu.Lock()
		b, err := readRepoFile(l.fsys, s.RevokedFile, maxRevokedFile)
		l.fsMu.Unlock()
		if err != nil {
			l.errs.at(&c.Meta, "spec.revokedFile", "%v", err)
		} else {
			l.readRevoked(s.RevokedFile, b, data.revoked)
		}
	}
	return data, l.errs.count() == n
}

// readRevoked adds the serials of a revoked file to set, reporting bad
// lines at file:line.
func (l *loader) readRevoked(file string, b []byte, set map[string]struct{}) {
	b = bytes.TrimPrefix(b, []byte("\uFEFF")) // a byte-order mark some editors write
	for line := 1; len(b) > 0; line++ {
		var s []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			s, b = b[:i], b[i+1:]
		} else {
			s, b = b, nil
		}
		if i := bytes.IndexByte(s, '#'); i >= 0 {
			s = s[:i] // a comment, on a line of its own or after the serial
		}
		s = bytes.TrimSpace(s)
		if len(s) == 0 {
			continue
		}
		h, err := ParseSerial(string(s))
		if err != nil {
			l.errs.add(Source{File: file, Line: line, Col: 1}, "", "%v", err)
			if l.errs.full() {
				return
			}
			continue
		}
		set[h] = struct{}{}
	}
}

// parseCACerts reads PEM CA certificates: at least one, only CERTIFICATE
// blocks, each a CA (basicConstraints CA:TRUE, and keyCertSign when it has
// a key usage) within its validity at now.
func parseCACerts(pemData []byte, now time.Time) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := pemData
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q; want only \"CERTIFICATE\" blocks", len(certs)+1, block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %v", len(certs)+1, err)
		}
		switch {
		case !cert.BasicConstraintsValid || !cert.IsCA:
			return nil, fmt.Errorf("certificate %d (%s) is not a CA certificate: it lacks basicConstraints CA:TRUE", len(certs)+1, cert.Subject)
		case cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0:
			return nil, fmt.Errorf("certificate %d (%s) is not a CA certificate: its key usage lacks keyCertSign", len(certs)+1, cert.Subject)
		case now.After(cert.NotAfter):
			return nil, fmt.Errorf("certificate %d (%s) expired on %s", len(certs)+1, cert.Subject, cert.NotAfter.UTC().Format(time.RFC3339))
		case now.Before(cert.NotBefore):
			return nil, fmt.Errorf("certificate %d (%s) is not valid before %s", len(certs)+1, cert.Subject, cert.NotBefore.UTC().Format(time.RFC3339))
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no PEM \"CERTIFICATE\" block")
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("not PEM after certificate %d: want only PEM \"CERTIFICATE\" blocks", len(certs))
	}
	return certs, nil
}

// DeviceCA returns the DeviceCA called name, or nil.
func (f *Fleet) DeviceCA(name string) *DeviceCA { return find(f.DeviceCAs, name) }
