package schema

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // maintenance windows name IANA zones; devices of the controller may lack a zoneinfo database

	"github.com/gitfleet/gitfleet/schema/didyoumean"
)

// The rules of this file are those of a single manifest that the CUE
// schema does not express well. Each check reports at the offending field
// and returns whether the manifest is valid.

func (l *loader) checkArtifact(a *Artifact) bool {
	n := l.errs.count()
	s := &a.Spec
	if u, ok := strings.CutPrefix(s.Source, "https://"); ok {
		if _, err := url.Parse("https://" + u); err != nil || u == "" {
			l.errs.at(&a.Meta, "spec.source", "invalid URL %q", s.Source)
		}
		if s.SHA256 == "" {
			l.errs.at(&a.Meta, "spec.sha256", "an artifact from an https URL needs sha256")
		}
	} else if err := checkRelPath(s.Source); err != nil {
		l.errs.at(&a.Meta, "spec.source", "%v", err)
	}
	if s.MinSignatures > 0 && s.MinSignatures > len(s.SignedBy) {
		l.errs.at(&a.Meta, "spec.minSignatures", "minSignatures is %d but signedBy names %d keys", s.MinSignatures, len(s.SignedBy))
	}
	if s.MinSignatures == 0 && len(s.SignedBy) > 0 {
		s.MinSignatures = 1
	}
	l.checkUnique(&a.Meta, "spec.signedBy", s.SignedBy)
	return l.errs.count() == n
}

// checkRelPath checks an artifact-store or repository path: relative,
// slash-separated, clean and inside its root.
func checkRelPath(p string) error {
	switch {
	case strings.Contains(p, "://"):
		return fmt.Errorf("%q: URLs must be https", p)
	case strings.Contains(p, `\`):
		return fmt.Errorf("%q: use forward slashes", p)
	case !fs.ValidPath(p) || p == ".":
		return fmt.Errorf("%q: want a clean relative path without '..' (like artifacts/hello-2.mender)", p)
	}
	return nil
}

func (l *loader) checkRollout(r *Rollout) bool {
	n := l.errs.count()
	s := &r.Spec
	l.checkTarget(&r.Meta, "spec.target", &s.Target, true)

	seen := make(map[string]bool)
	var lastPercent float64
	var lastCount int
	var percentPhase string
	for i := range s.Phases {
		p := &s.Phases[i]
		at := fmt.Sprintf("spec.phases[%d]", i)
		if seen[p.Name] {
			l.errs.at(&r.Meta, at+".name", "duplicate phase name %q", p.Name)
		}
		seen[p.Name] = true
		switch {
		case p.Percent > 0 && p.Count > 0:
			l.errs.at(&r.Meta, at, "set percent or count, not both")
		case p.Percent == 0 && p.Count == 0:
			l.errs.at(&r.Meta, at, "set percent or count")
		case p.Percent > 0:
			if p.Percent <= lastPercent {
				l.errs.at(&r.Meta, at+".percent", "phase sizes must grow: %v%% is not more than %v%% of phase %q", p.Percent, lastPercent, s.Phases[i-1].Name)
			}
			lastPercent, percentPhase = p.Percent, p.Name
		case p.Count > 0:
			if percentPhase != "" {
				l.errs.at(&r.Meta, at+".count", "a count cannot follow a percentage (phase %q): their sizes cannot be compared", percentPhase)
			} else if p.Count <= lastCount {
				l.errs.at(&r.Meta, at+".count", "phase sizes must grow: %d devices is not more than %d of phase %q", p.Count, lastCount, s.Phases[i-1].Name)
			}
			lastCount = p.Count
		}
		if p.Abort.MinSample > 0 && p.Abort.MaxFailurePercent == nil && p.Abort.MaxTimedOutPercent == nil {
			l.errs.at(&r.Meta, at+".abort.minSample", "minSample applies to maxFailurePercent or maxTimedOutPercent, neither of which is set")
		}
		l.checkUnique(&r.Meta, at+".abort.alerts", p.Abort.Alerts)
	}
	for i, name := range s.ApprovedPhases {
		at := fmt.Sprintf("spec.approvedPhases[%d]", i)
		switch p := r.Phase(name); {
		case p == nil:
			l.errs.at(&r.Meta, at, "unknown phase %q%s", name, didYouMean(name, phaseNames(r)))
		case !p.RequiresApproval:
			l.errs.at(&r.Meta, at, "phase %q does not require approval", name)
		}
	}
	l.checkUnique(&r.Meta, "spec.approvedPhases", s.ApprovedPhases)
	for i, w := range s.MaintenanceWindows {
		at := fmt.Sprintf("spec.maintenanceWindows[%d]", i)
		if w.Start == w.End {
			l.errs.at(&r.Meta, at+".end", "window is empty: start and end are both %s", w.Start)
		}
		if w.TimeZone != "" {
			if _, err := time.LoadLocation(w.TimeZone); err != nil {
				l.errs.at(&r.Meta, at+".timeZone", "unknown time zone %q", w.TimeZone)
			}
		}
		l.checkUnique(&r.Meta, at+".days", w.Days)
	}
	return l.errs.count() == n
}

func phaseNames(r *Rollout) []string {
	var names []string
	for _, p := range r.Spec.Phases {
		names = append(names, p.Name)
	}
	return names
}

func didYouMean(s string, candidates []string) string {
	if sug := didyoumean.Closest(s, candidates); sug != "" {
		return fmt.Sprintf("; did you mean %q?", sug)
	}
	return ""
}

// checkTarget checks the shape of a target. A rollout's target must name
// some devices; other kinds may leave it empty for the whole fleet.
func (l *loader) checkTarget(m *Meta, at string, t *Target, required bool) {
	if required && t.IsZero() {
		l.errs.at(m, at, "target names no devices: set groups, devices, selector, or all: true")
	}
	if t.All && (len(t.Groups) > 0 || len(t.Devices) > 0 || t.Selector != nil) {
		l.errs.at(m, at+".all", "all: true targets the whole fleet; remove groups, devices and selector, or all")
	}
	l.checkUnique(m, at+".groups", t.Groups)
	l.checkUnique(m, at+".devices", t.Devices)
	if t.Selector != nil {
		l.checkSelector(m, at+".selector", t.Selector)
	}
}

func (l *loader) checkSelector(m *Meta, at string, s *Selector) {
	if len(s.Identity) == 0 && len(s.Inventory) == 0 {
		l.errs.at(m, at, "empty selector matches every device; use all: true to target the whole fleet")
	}
	for scope, attrs := range map[string]map[string]Match{"identity": s.Identity, "inventory": s.Inventory} {
		for name, match := range attrs {
			p := at + "." + formatPath([]string{scope, name})
			switch {
			case match.Equal == nil && match.In == nil && match.Glob == "":
				l.errs.at(m, p, "set in or glob")
			case match.In != nil && match.Glob != "":
				l.errs.at(m, p, "set in or glob, not both")
			case match.In != nil && len(match.In) == 0:
				l.errs.at(m, p+".in", "empty set matches nothing")
			case match.Glob != "":
				if _, err := path.Match(match.Glob, ""); err != nil {
					l.errs.at(m, p+".glob", "invalid pattern %q", match.Glob)
				}
			}
		}
	}
}

func (l *loader) checkGroup(g *DeviceGroup) bool {
	n := l.errs.count()
	if len(g.Spec.Members) == 0 && g.Spec.Selector == nil {
		l.errs.at(&g.Meta, "spec", "a group needs members or a selector")
	}
	l.checkUnique(&g.Meta, "spec.members", g.Spec.Members)
	if g.Spec.Selector != nil {
		l.checkSelector(&g.Meta, "spec.selector", g.Spec.Selector)
	}
	return l.errs.count() == n
}

// checkDevice enforces that a device's key is bound: by the fingerprint in
// Git, or by the first key accepted when the manifest opts into trust on
// first use. An identity alone (a MAC anyone can read) binds nothing.
func (l *loader) checkDevice(d *Device) bool {
	s := &d.Spec
	switch {
	case len(s.Identity) == 0 && s.PublicKeySHA256 == "":
		l.errs.at(&d.Meta, "spec", "device %q needs identity or publicKeySHA256", d.Name)
	case s.TrustOnFirstUse && s.PublicKeySHA256 != "":
		l.errs.at(&d.Meta, "spec.trustOnFirstUse", "device %q names its key (publicKeySHA256), so there is no first key to trust: remove trustOnFirstUse", d.Name)
	case s.TrustOnFirstUse && len(s.Identity) == 0:
		l.errs.at(&d.Meta, "spec.trustOnFirstUse", "device %q: trustOnFirstUse binds the first key that authenticates with an identity: add identity", d.Name)
	case s.PublicKeySHA256 == "" && !s.TrustOnFirstUse:
		l.errs.at(&d.Meta, "spec", "device %q is declared by identity alone, which any key could claim: add publicKeySHA256 (`gitfleet devices accept ID` prints it), or set trustOnFirstUse: true to bind the first key that authenticates", d.Name)
	default:
		return true
	}
	return false
}

func (l *loader) checkMonitor(c *MonitorCheck) bool {
	n := l.errs.count()
	s := &c.Spec
	l.checkTarget(&c.Meta, "spec.target", &s.Target, false)
	var set []string
	for _, p := range s.probes() {
		if p.set {
			set = append(set, p.name)
		}
	}
	switch len(set) {
	case 0:
		var names []string
		for _, p := range s.probes() {
			names = append(names, p.name)
		}
		l.errs.at(&c.Meta, "spec", "a check needs one probe: %s", strings.Join(names, ", "))
	case 1:
	default:
		l.errs.at(&c.Meta, "spec."+set[1], "a check has one probe; this one sets %s", strings.Join(set, " and "))
	}
	if s.Log != nil {
		if _, err := regexp.Compile(s.Log.Pattern); err != nil {
			l.errs.at(&c.Meta, "spec.log.pattern", "invalid regular expression: %v", err)
		}
		if cmd, ok := strings.CutPrefix(s.Log.Path, "@"); ok && strings.TrimSpace(cmd) == "" {
			l.errs.at(&c.Meta, "spec.log.path", `"@" needs a command, like "@journalctl -f"`)
		} else if !ok && !strings.HasPrefix(s.Log.Path, "/") {
			l.errs.at(&c.Meta, "spec.log.path", "want an absolute path or @command, got %q", s.Log.Path)
		}
	}
	if s.Interval.Duration != 0 && s.Interval.Duration < time.Second {
		l.errs.at(&c.Meta, "spec.interval", "interval %s is below the 1s minimum", s.Interval)
	}
	if s.Severity == "" {
		s.Severity = SeverityWarning
	}
	return l.errs.count() == n
}

func (l *loader) checkConfig(c *DeviceConfig) bool {
	n := l.errs.count()
	t := &c.Spec.Target
	scopes := 0
	for _, set := range []bool{t.All, len(t.Groups) > 0, len(t.Devices) > 0} {
		if set {
			scopes++
		}
	}
	if scopes != 1 {
		l.errs.at(&c.Meta, "spec.target", "target exactly one of all: true, groups or devices")
	}
	l.checkUnique(&c.Meta, "spec.target.groups", t.Groups)
	l.checkUnique(&c.Meta, "spec.target.devices", t.Devices)
	s := &c.Spec
	if s.Values == nil && s.Secrets == nil {
		l.errs.at(&c.Meta, "spec", "a DeviceConfig sets values, secrets, or both")
	}
	for _, k := range slices.Sorted(maps.Keys(s.Secrets)) {
		at := SecretPath(k)
		if _, ok := s.Values[k]; ok {
			l.errs.at(&c.Meta, at, "%q is both a value and a secret: keep one (a secret is never in Git in the clear)", k)
		}
		switch sec := s.Secrets[k]; {
		case sec.File != "" && sec.Age != "":
			l.errs.at(&c.Meta, at, "set file or age, not both")
		case sec.File == "" && sec.Age == "":
			l.errs.at(&c.Meta, at, "set file (a file of the controller's --config-secrets-dir) or age (an ASCII-armored age ciphertext)")
		case sec.File != "":
			if err := CheckSecretFileName(sec.File); err != nil {
				l.errs.at(&c.Meta, at+".file", "%v", err)
			}
		default:
			if err := CheckAgeArmor(sec.Age); err != nil {
				l.errs.at(&c.Meta, at+".age", "%v", err)
			}
		}
	}
	return l.errs.count() == n
}

// maxKeyFile bounds a public key file.
const maxKeyFile = 64 << 10

func (l *loader) checkKey(k *SigningKey) bool {
	s := &k.Spec
	at := "spec.publicKey"
	switch {
	case s.PublicKey != "" && s.PublicKeyFile != "":
		l.errs.at(&k.Meta, "spec.publicKeyFile", "set publicKey or publicKeyFile, not both")
		return false
	case s.PublicKey == "" && s.PublicKeyFile == "":
		l.errs.at(&k.Meta, "spec", "set publicKey (PEM) or publicKeyFile")
		return false
	case s.PublicKeyFile != "":
		at = "spec.publicKeyFile"
		l.fsMu.Lock()
		b, err := readRepoFile(l.fsys, s.PublicKeyFile, maxKeyFile)
		l.fsMu.Unlock()
		if err != nil {
			l.errs.at(&k.Meta, at, "%v", err)
			return false
		}
		s.PublicKey = string(b)
	}
	if err := checkPublicKey(s.Algorithm, []byte(s.PublicKey)); err != nil {
		l.errs.at(&k.Meta, at, "%v", err)
		return false
	}
	return true
}

// checkPublicKey checks that pemData holds one PKIX public key of the
// algorithm alg.
func checkPublicKey(alg string, pemData []byte) error {
	block, _ := pem.Decode(pemData)
	if block == nil || block.Type != "PUBLIC KEY" {
		return fmt.Errorf("no PEM %q block", "PUBLIC KEY")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("parse public key: %w", err)
	}
	var got string
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		got = "ecdsa"
		if p.Curve == elliptic.P256() {
			got = AlgorithmECDSAP256
		}
	case *rsa.PublicKey:
		got = AlgorithmRSA
		if p.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits; want at least 2048", p.N.BitLen())
		}
	case ed25519.PublicKey:
		got = AlgorithmEd25519
	default:
		got = fmt.Sprintf("%T", pub)
	}
	if got != alg {
		return fmt.Errorf("key is %s, but algorithm says %s", got, alg)
	}
	return nil
}

// readRepoFile reads the regular file at the slash-separated path name of
// fsys, refusing paths that leave the tree and, where fsys can tell,
// symbolic links on the way.
func readRepoFile(fsys fs.FS, name string, limit int64) ([]byte, error) {
	if err := checkRelPath(name); err != nil {
		return nil, err
	}
	for p := name; p != "."; p = path.Dir(p) {
		fi, err := fs.Lstat(fsys, p)
		if err != nil {
			return nil, unwrapPath(err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return nil, fmt.Errorf("%s is a symbolic link; links are not followed", p)
		}
		if p == name && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s is not a regular file", p)
		}
	}
	f, err := fsys.Open(name)
	if err != nil {
		return nil, unwrapPath(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, unwrapPath(err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

func (l *loader) checkNotification(nt *Notification) bool {
	n := l.errs.count()
	s := &nt.Spec
	var sinks []string
	for _, k := range []struct {
		name string
		set  bool
	}{{"webhook", s.Webhook != nil}, {"email", s.Email != nil}, {"slack", s.Slack != nil}, {"gitStatus", s.GitStatus != nil}} {
		if k.set {
			sinks = append(sinks, k.name)
		}
	}
	switch len(sinks) {
	case 0:
		l.errs.at(&nt.Meta, "spec", "a Notification needs one sink: set webhook, email, slack or gitStatus")
	case 1:
	default:
		// At the second sink: the schema reports a document whose sinks
		// are all valid at spec; this rule speaks when one of them has
		// an error of its own.
		l.errs.at(&nt.Meta, "spec."+sinks[1], "a Notification has one sink (webhook, email, slack or gitStatus); this one sets %s", andList(sinks))
	}
	if s.Webhook != nil {
		u, err := url.Parse(s.Webhook.URL)
		switch {
		case err != nil || u.Host == "":
			l.errs.at(&nt.Meta, "spec.webhook.url", "invalid URL")
		case u.User != nil:
			l.errs.at(&nt.Meta, "spec.webhook.url", "credentials do not belong in the URL; use secret")
		}
		if !s.Webhook.Secret.valid() {
			l.errs.at(&nt.Meta, "spec.webhook", "webhooks are signed: set secret.env or secret.file (not both)")
		}
	}
	if s.Slack != nil && !s.Slack.URL.valid() {
		l.errs.at(&nt.Meta, "spec.slack.url", "the incoming-webhook URL is a secret held by the controller: set url.env (an environment variable) or url.file (a file on the controller), not both")
	}
	if g := s.GitStatus; g != nil {
		if u, err := url.Parse(g.URL); err != nil || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			l.errs.at(&nt.Meta, "spec.gitStatus.url", "want the API address of the Git host, such as https://api.github.com or https://gitlab.example.com, without credentials, query or fragment")
		}
		if g.Repository == "" {
			l.errs.at(&nt.Meta, "spec.gitStatus", "set repository: owner/name (on GitLab, a project path or its numeric ID)")
		} else if g.Provider != GitLab && strings.Count(g.Repository, "/") != 1 {
			l.errs.at(&nt.Meta, "spec.gitStatus.repository", "a %s repository is owner/name", g.Provider)
		}
		if !g.Token.valid() {
			l.errs.at(&nt.Meta, "spec.gitStatus.token", "the API token is a secret held by the controller: set token.env (an environment variable) or token.file (a file on the controller), not both")
		}
	}
	l.checkUnique(&nt.Meta, "spec.events", s.Events)
	return l.errs.count() == n
}

// andList joins names as "a", "a and b", "a, b and c".
func andList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// valid reports whether exactly one of Env and File is set.
func (r SecretRef) valid() bool { return (r.Env == "") != (r.File == "") }

// checkUnique reports repeated entries of the list at path.
func (l *loader) checkUnique(m *Meta, at string, list []string) {
	seen := make(map[string]bool, len(list))
	for i, s := range list {
		if seen[s] {
			l.errs.at(m, fmt.Sprintf("%s[%d]", at, i), "%q is listed twice", s)
		}
		seen[s] = true
	}
}
