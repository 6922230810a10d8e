package gitsource

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
)

// Auth holds the credentials for the remote. Its String, GoString and
// LogValue methods never show a secret, so an [Options] value can be printed
// or logged.
type Auth struct {
	// Username is the HTTPS basic-auth user. For SSH it is the login user
	// when the URL names none (default "git").
	Username string
	// Password is the HTTPS basic-auth password.
	Password string
	// Token is an HTTPS access token. It is sent as the basic-auth password
	// with Username (else the URL's user, else "x-access-token"), which is
	// how GitHub, GitLab, Gitea/Forgejo and Bitbucket accept tokens for Git
	// over HTTPS.
	Token string
	// SSHKey is a PEM-encoded private key (OpenSSH, PKCS#1 or PKCS#8) for
	// ssh:// and scp-style URLs.
	SSHKey []byte
	// SSHKeyPassphrase decrypts SSHKey when it is encrypted.
	SSHKeyPassphrase string
}

const redacted = "REDACTED"

// method names the kind of credentials: "none", "basic", "token", "ssh-key".
func (a Auth) method() string {
	switch {
	case len(a.SSHKey) > 0:
		return "ssh-key"
	case a.Token != "":
		return "token"
	case a.Username != "" || a.Password != "":
		return "basic"
	}
	return "none"
}

// LogValue implements [slog.LogValuer]: the kind of credentials and the user
// name, never a password, token or key.
func (a Auth) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("method", a.method())}
	if a.Username != "" {
		attrs = append(attrs, slog.String("username", a.Username))
	}
	if a.Password != "" || a.Token != "" || len(a.SSHKey) > 0 || a.SSHKeyPassphrase != "" {
		attrs = append(attrs, slog.String("secret", redacted))
	}
	return slog.GroupValue(attrs...)
}

// String describes the credentials without their secrets.
func (a Auth) String() string {
	s := "auth " + a.method()
	if a.Username != "" {
		s += " user " + a.Username
	}
	if a.Password != "" || a.Token != "" || len(a.SSHKey) > 0 || a.SSHKeyPassphrase != "" {
		s += " (secret " + redacted + ")"
	}
	return s
}

// MarshalJSON writes what LogValue shows, so a configuration dumped as JSON
// (or logged by slog's JSON handler inside a struct) carries no secret.
func (a Auth) MarshalJSON() ([]byte, error) {
	m := map[string]string{"method": a.method()}
	if a.Username != "" {
		m["username"] = a.Username
	}
	if a.Password != "" || a.Token != "" || len(a.SSHKey) > 0 || a.SSHKeyPassphrase != "" {
		m["secret"] = redacted
	}
	return json.Marshal(m)
}

// GoString keeps %#v from printing the secrets.
func (a Auth) GoString() string { return "gitsource.Auth{" + a.String() + "}" }

// secrets lists the strings that must never appear in a message.
func (a Auth) secrets() []string {
	var s []string
	for _, v := range []string{a.Password, a.Token, a.SSHKeyPassphrase} {
		if len(v) >= 4 { // shorter "secrets" would redact ordinary words
			s = append(s, v, url.PathEscape(v), url.QueryEscape(v))
		}
	}
	return s
}

// remote is a parsed remote URL.
type remote struct {
	scheme  string // file, https, http, ssh
	fetch   string // the URL given to go-git: no password, no https user
	display string // the URL for messages: no credentials, no query
	user    string // user from the URL
	pass    string // password from the URL (https only)
	host    string // host:port, for SSH host key lookups
}

// parseRemote splits raw into what go-git fetches and what messages show.
func parseRemote(raw string) (remote, error) {
	if raw == "" {
		return remote{}, errors.New("gitsource: no URL")
	}
	ep, err := transport.NewEndpoint(raw)
	if err != nil {
		return remote{}, fmt.Errorf("gitsource: parse URL %q: %w", stripCredentials(raw), err)
	}
	r := remote{scheme: strings.ToLower(ep.Protocol), user: ep.User, pass: ep.Password}
	switch r.scheme {
	case "file":
		r.fetch, r.display = raw, raw
		if !strings.Contains(raw, "://") {
			r.fetch = "file://" + ep.Path
			r.display = r.fetch
		}
		return r, nil
	case "ssh":
		port := ep.Port
		if port == 0 {
			port = 22
		}
		r.host = net.JoinHostPort(strings.Trim(ep.Host, "[]"), strconv.Itoa(port))
		if !strings.Contains(raw, "://") { // scp-style: user@host:path, no password possible
			r.fetch, r.display = raw, raw
			return r, nil
		}
		if r.pass != "" {
			return remote{}, errors.New("gitsource: ssh URLs cannot carry a password; use Auth.SSHKey")
		}
	case "https", "http":
	case "git":
		return remote{}, errors.New("gitsource: git:// is neither encrypted nor authenticated; use https:// or ssh://")
	default:
		return remote{}, fmt.Errorf("gitsource: unsupported URL scheme %q (want file, https or ssh)", ep.Protocol)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return remote{}, fmt.Errorf("gitsource: parse URL %q: %w", stripCredentials(raw), err)
	}
	u.User = nil
	if r.scheme == "ssh" && r.user != "" {
		u.User = url.User(r.user)
	}
	r.fetch = u.String()
	u.User, u.RawQuery, u.ForceQuery, u.Fragment = nil, "", false, ""
	r.display = u.String()
	return r, nil
}

// stripCredentials removes user information and query from a URL-shaped
// string, for messages about a URL that did not parse.
func stripCredentials(raw string) string {
	if i := strings.Index(raw, "://"); i >= 0 {
		rest := raw[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if slash := strings.Index(rest, "/"); slash < 0 || at < slash {
				rest = rest[at+1:]
			}
		}
		raw = raw[:i+3] + rest
	}
	if q := strings.IndexAny(raw, "?#"); q >= 0 {
		raw = raw[:q]
	}
	return raw
}

// transportAuth builds the go-git credentials for r.
func transportAuth(r remote, opts *Options) (transport.AuthMethod, error) {
	a := opts.Auth
	switch r.scheme {
	case "file":
		if a.method() != "none" {
			return nil, errors.New("gitsource: credentials given for a file URL")
		}
		return nil, nil
	case "http", "https":
		if len(a.SSHKey) > 0 {
			return nil, fmt.Errorf("gitsource: an SSH key was given for an %s URL", r.scheme)
		}
		user, pass := a.Username, a.Password
		if a.Token != "" {
			if pass != "" {
				return nil, errors.New("gitsource: give Auth.Token or Auth.Password, not both")
			}
			pass = a.Token
			if user == "" {
				user = r.user // e.g. https://oauth2@gitlab.example.com/…
			}
			if user == "" {
				user = "x-access-token"
			}
		}
		if user == "" && pass == "" {
			user, pass = r.user, r.pass
		}
		if user == "" && pass == "" {
			return nil, nil
		}
		return &githttp.BasicAuth{Username: user, Password: pass}, nil
	case "ssh":
		if len(a.SSHKey) == 0 {
			return nil, errors.New("gitsource: an ssh URL needs Auth.SSHKey")
		}
		if a.Password != "" || a.Token != "" {
			return nil, errors.New("gitsource: a password or token was given for an ssh URL; use Auth.SSHKey")
		}
		user := r.user
		if user == "" {
			user = a.Username
		}
		if user == "" {
			user = "git"
		}
		keys, err := gitssh.NewPublicKeys(user, a.SSHKey, a.SSHKeyPassphrase)
		if err != nil {
			// The parse error never quotes the key.
			return nil, fmt.Errorf("gitsource: read Auth.SSHKey: %w", err)
		}
		switch {
		case opts.HostKey != "" && opts.KnownHostsFile != "":
			return nil, errors.New("gitsource: give HostKey or KnownHostsFile, not both")
		case opts.HostKey != "":
			key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(opts.HostKey))
			if err != nil {
				return nil, fmt.Errorf("gitsource: parse HostKey (want authorized_keys format, e.g. \"ssh-ed25519 AAAA…\"): %w", err)
			}
			keys.HostKeyCallback = ssh.FixedHostKey(key)
			keys.HostKeyAlgorithms = hostKeyAlgorithms(key.Type())
		case opts.KnownHostsFile != "":
			db, err := gitssh.NewKnownHostsDb(opts.KnownHostsFile)
			if err != nil {
				return nil, fmt.Errorf("gitsource: read KnownHostsFile: %w", err)
			}
			keys.HostKeyCallback = db.HostKeyCallback()
			keys.HostKeyAlgorithms = db.HostKeyAlgorithms(r.host)
		default:
			return nil, errors.New("gitsource: an ssh URL needs HostKey or KnownHostsFile (host keys are never trusted on first use)")
		}
		return &sshAuth{PublicKeys: keys, timeout: opts.FetchTimeout}, nil
	}
	return nil, fmt.Errorf("gitsource: unsupported URL scheme %q", r.scheme)
}

// hostKeyAlgorithms lists the algorithms a server may use to prove it holds
// a key of type keyType.
func hostKeyAlgorithms(keyType string) []string {
	if keyType == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{keyType}
}

// sshAuth bounds the SSH handshake, which go-git does not tie to the fetch
// context.
type sshAuth struct {
	*gitssh.PublicKeys
	timeout time.Duration
}

func (a *sshAuth) ClientConfig() (*ssh.ClientConfig, error) {
	cfg, err := a.PublicKeys.ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.Timeout = a.timeout
	return cfg, nil
}

// redactor removes secrets from messages.
type redactor []string

func (r redactor) String(s string) string {
	for _, secret := range r {
		s = strings.ReplaceAll(s, secret, redacted)
	}
	return s
}
