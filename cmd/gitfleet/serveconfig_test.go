package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/spf13/pflag"

	"github.com/gitfleet/gitfleet/controller/notifier"
)

func TestServeConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "gitfleet.yaml")
	os.WriteFile(file, []byte("repo: https://git.example/fleet.git\nbranch: prod\npoll_interval: 2m\nlisten: ':9443'\nwebhook_secret: from-file\npublic_url: https://gitfleet.example\n"), 0o600)
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600)

	cfg := defaultServeConfig()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	cfg.bindFlags(fs)
	if err := fs.Parse([]string{"--config", file, "--listen", ":10443", "--hostname", "a.example", "--hostname", "b.example"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GITFLEET_BRANCH": "staging", "GITFLEET_LISTEN": ":7443", "GITFLEET_MANAGEMENT_TOKEN_FILE": tokenFile}
	got, err := loadServeConfig(fs, environ(env))
	if err != nil {
		t.Fatal(err)
	}
	for name, pair := range map[string][2]any{
		"repo from file":        {got.Repo, "https://git.example/fleet.git"},
		"branch: env over file": {got.Branch, "staging"},
		"listen: flag over env": {got.Listen, ":10443"},
		"poll from file":        {got.PollInterval, 2 * time.Minute},
		"default data dir":      {got.DataDir, ".gitfleet"},
		"secret file":           {got.ManagementToken, "s3cret"},
		"webhook secret":        {got.WebhookSecret, "from-file"},
		"repeatable flag":       {strings.Join(got.Hostnames, ","), "a.example,b.example"},
	} {
		if pair[0] != pair[1] {
			t.Errorf("%s: got %v, want %v", name, pair[0], pair[1])
		}
	}
	if err := got.validate(); err != nil {
		t.Errorf("validate: %v", err)
	}
	s := got.String()
	if strings.Contains(s, "s3cret") || strings.Contains(s, "from-file") || !strings.Contains(s, "<redacted>") {
		t.Errorf("secrets not redacted: %s", s)
	}
}

func TestServeConfigErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "bad.yaml")
	os.WriteFile(file, []byte("repo: x\nbrnach: main\n"), 0o600)
	cfg := defaultServeConfig()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	cfg.bindFlags(fs)
	fs.Parse([]string{"--config", file})
	if _, err := loadServeConfig(fs, environ(nil)); err == nil || !strings.Contains(err.Error(), "brnach") {
		t.Errorf("unknown key in config file: %v", err)
	}
	if _, err := loadServeConfig(pflagWith(t), environ(map[string]string{"GITFLEET_POLL_INTERVAL": "soon"})); err == nil || !strings.Contains(err.Error(), "GITFLEET_POLL_INTERVAL") {
		t.Errorf("bad env: %v", err)
	}
	c := defaultServeConfig()
	c.TLSCert = "x"
	c.PollInterval = time.Millisecond
	err := c.validate()
	c.Listen = ":8443" // no host, and no --public-url
	for _, want := range []string{"--repo", "--tls-key", "poll-interval", "--public-url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validate does not mention %s: %v", want, err)
		}
	}
	if got := redactURL("redis://u:p@h:6379,redis://h2"); got != "redis://<redacted>@h:6379,redis://h2" {
		t.Errorf("redactURL: %s", got)
	}
}

// environ is an environment of the variables in m, for loadServeConfig.
func environ(m map[string]string) func() []string {
	return func() []string {
		var out []string
		for k, v := range m {
			out = append(out, k+"="+v)
		}
		return out
	}
}

func pflagWith(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	cfg := defaultServeConfig()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	cfg.bindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

// The SMTP settings of notification mail are layered like the others; the
// password comes only from a file (there is no flag for it) and never
// shows in the settings or the log.
func TestServeConfigSMTP(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "gitfleet.yaml")
	pwFile := filepath.Join(dir, "smtp-password")
	os.WriteFile(pwFile, []byte("smtp-pa55word\n"), 0o600)
	os.WriteFile(file, []byte("repo: https://git.example/fleet.git\npublic_url: https://gitfleet.example\n"+
		"smtp_addr: smtp.example.com:587\nsmtp_username: fleet\nsmtp_password_file: "+pwFile+"\n"), 0o600)
	fs := pflagWith(t, "--config", file, "--smtp-digest-window", "5m")
	env := map[string]string{"GITFLEET_SMTP_FROM": "Gitfleet <gitfleet@fleet.example>"}
	got, err := loadServeConfig(fs, environ(env))
	if err != nil {
		t.Fatal(err)
	}
	if err := got.validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	s := got.smtp()
	if s.Addr != "smtp.example.com:587" || s.From != "Gitfleet <gitfleet@fleet.example>" || s.Username != "fleet" ||
		s.Password != "smtp-pa55word" || s.DigestWindow != 5*time.Minute || s.AllowPlaintext {
		t.Errorf("smtp settings = %+v", s)
	}
	if fs.Lookup("smtp-password") != nil {
		t.Error("a --smtp-password flag exists; passwords never go on the command line")
	}
	if line := got.String(); strings.Contains(line, "smtp-pa55word") || !strings.Contains(line, `smtp_addr="smtp.example.com:587"`) ||
		strings.Contains(line, "smtp_insecure_plaintext") {
		t.Errorf("settings line: %s", line)
	}
	if !slices.Contains(got.secretValues(), "smtp-pa55word") {
		t.Error("the SMTP password is not among the values the log redacts")
	}
	if (defaultServeConfig()).smtp() != (notifier.SMTP{}) {
		t.Error("no --smtp-addr must mean no SMTP server")
	}

	// The bool flag and its variable.
	fs = pflagWith(t, "--smtp-insecure-plaintext")
	got, err = loadServeConfig(fs, environ(nil))
	if err != nil || !got.SMTPInsecure {
		t.Errorf("--smtp-insecure-plaintext: %v, %v", got.SMTPInsecure, err)
	}
	got, err = loadServeConfig(pflagWith(t), environ(map[string]string{"GITFLEET_SMTP_INSECURE_PLAINTEXT": "true"}))
	if err != nil || !got.SMTPInsecure {
		t.Errorf("GITFLEET_SMTP_INSECURE_PLAINTEXT: %v, %v", got.SMTPInsecure, err)
	}

	for _, tc := range []struct {
		name string
		mod  func(*serveConfig)
		want string
	}{
		{"from without addr", func(c *serveConfig) { c.SMTPAddr = ""; c.SMTPUsername, c.SMTPPasswordFile = "", "" }, "need --smtp-addr"},
		{"addr without port", func(c *serveConfig) { c.SMTPAddr = "smtp.example.com" }, `--smtp-addr "smtp.example.com": give host:port`},
		{"addr without from", func(c *serveConfig) { c.SMTPFrom = "" }, "needs --smtp-from"},
		{"bad from", func(c *serveConfig) { c.SMTPFrom = "gitfleet" }, `--smtp-from "gitfleet"`},
		{"user without password file", func(c *serveConfig) { c.SMTPPasswordFile = "" }, "go together"},
		{"plaintext with credentials", func(c *serveConfig) { c.SMTPInsecure = true }, "never sent without TLS"},
		{"tiny digest window", func(c *serveConfig) { c.SMTPDigestWindow = time.Millisecond }, "--smtp-digest-window 1ms is too short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultServeConfig()
			c.Repo, c.PublicURL = "https://git.example/fleet.git", "https://gitfleet.example"
			c.SMTPAddr, c.SMTPFrom, c.SMTPUsername, c.SMTPPasswordFile = "smtp.example.com:587", "gitfleet@fleet.example", "fleet", pwFile
			tc.mod(&c)
			if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate = %v, want %q", err, tc.want)
			}
		})
	}
}

// The DeviceConfig secret settings are layered like the others; the age
// identity is read and checked at start: refused when others may read it
// (like ssh with a private key), never shown in the settings.
func TestServeConfigDeviceConfigSecrets(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "identity.txt")
	if err := os.WriteFile(key, []byte("# public key: "+id.Recipient().String()+"\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "gitfleet.yaml")
	os.WriteFile(file, []byte("repo: https://git.example/fleet.git\npublic_url: https://gitfleet.example\nconfig_secrets_dir: /nonexistent\n"), 0o600)
	env := map[string]string{"GITFLEET_CONFIG_SECRETS_DIR": secrets, "GITFLEET_CONFIG_AGE_IDENTITY": "/nonexistent"}
	got, err := loadServeConfig(pflagWith(t, "--config", file, "--config-age-identity", key), environ(env))
	if err != nil {
		t.Fatal(err)
	}
	if got.ConfigSecretsDir != secrets || got.ConfigAgeIdentity != key {
		t.Fatalf("layering: secrets dir %q (want the env's), identity %q (want the flag's)", got.ConfigSecretsDir, got.ConfigAgeIdentity)
	}
	if err := got.validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	opts := got.deviceConfig()
	if opts.SecretsDir != secrets || !slices.Equal(opts.Identities.Recipients(), []string{id.Recipient().String()}) {
		t.Errorf("deviceConfig() = %v", opts)
	}
	if line := fmt.Sprintf("%s %v %+v", got, got.LogValue(), opts); strings.Contains(line, "AGE-SECRET-KEY") {
		t.Errorf("the identity shows in the settings: %s", line)
	}

	open := filepath.Join(dir, "open.txt")
	os.WriteFile(open, []byte(id.String()+"\n"), 0o600)
	if err := os.Chmod(open, 0o640); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*serveConfig)
		want string
	}{
		{"group-readable identity", func(c *serveConfig) { c.ConfigAgeIdentity = open },
			"--config-age-identity: age identity " + open + " is accessible by others (mode 0640): it is a private key; chmod 600 " + open},
		{"missing identity", func(c *serveConfig) { c.ConfigAgeIdentity = filepath.Join(dir, "none") }, "--config-age-identity: age identity: open "},
		{"not an identity", func(c *serveConfig) { c.ConfigAgeIdentity = file }, "want the file `age-keygen -o FILE` writes"},
		{"missing secrets dir", func(c *serveConfig) { c.ConfigSecretsDir = filepath.Join(dir, "none") }, "--config-secrets-dir: stat "},
		{"secrets dir is a file", func(c *serveConfig) { c.ConfigSecretsDir = key }, "is not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := got
			tc.mod(&c)
			if err := c.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("validate = %v, want %q", err, tc.want)
			}
		})
	}
}

// Every layer's bad input is named where it is: the file and line, the
// variable, the flag.
func TestServeConfigErrorPlaces(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		file string // config file body; "" for none
		env  map[string]string
		args []string
		want string // %s is the config file's path
	}{
		{"unknown key, with a suggestion", "repo: x\n\nbrnach: main\n", nil, nil,
			`config %s:3: unknown key "brnach" (did you mean branch?)`},
		{"unknown key, nothing close", "repo: x\nfrobnicate: 1\n", nil, nil,
			`config %s:2: unknown key "frobnicate" (the keys are`},
		{"bad duration in the file", "repo: x\nbranch: main\npoll_interval: soon\n", nil, nil,
			`config %s:3: poll_interval "soon": time: invalid duration`},
		{"bad number in the file", "webhook_rate: fast\n", nil, nil,
			`config %s:1: webhook_rate "fast": cannot parse`},
		{"not a mapping", "- repo\n", nil, nil, `config %s:1: want key: value lines`},
		{"not YAML", "repo: [x\n", nil, nil, `config %s: yaml: line`},
		{"bad bool in the environment", "", map[string]string{"GITFLEET_SMTP_INSECURE_PLAINTEXT": "maybe"}, nil,
			`GITFLEET_SMTP_INSECURE_PLAINTEXT="maybe": cannot parse`},
		{"bad number in the environment", "", map[string]string{"GITFLEET_WEBHOOK_BURST": "lots"}, nil,
			`GITFLEET_WEBHOOK_BURST="lots": cannot parse`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			path := ""
			if tc.file != "" {
				path = write(strings.ReplaceAll(tc.name, " ", "-")+".yaml", tc.file)
				args = append([]string{"--config", path}, args...)
			}
			_, err := loadServeConfig(pflagWith(t, args...), environ(tc.env))
			want := tc.want
			if strings.Contains(want, "%s") {
				want = fmt.Sprintf(want, path)
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v, want %q", err, want)
			}
		})
	}
}

// Lists come from YAML sequences, comma-separated variables and repeated
// flags, each layer replacing the one below; variables that are empty or
// not serve's settings (other commands read GITFLEET_SERVER, …) are
// ignored; a flag left at its default does not hide a lower layer.
func TestServeConfigLayers(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "gitfleet.yaml")
	os.WriteFile(file, []byte("hostnames: [f1.example, f2.example]\ntrusted_proxies:\n  - 10.0.0.0/8\nwebhook_burst: 7\nsmtp_insecure_plaintext: true\npoll_interval: 90s\n"), 0o600)
	for _, tc := range []struct {
		name  string
		env   map[string]string
		args  []string
		check func(serveConfig) string
	}{
		{"file only", nil, nil, func(c serveConfig) string {
			if strings.Join(c.Hostnames, ",") != "f1.example,f2.example" || strings.Join(c.TrustedProxies, ",") != "10.0.0.0/8" ||
				c.WebhookBurst != 7 || !c.SMTPInsecure || c.PollInterval != 90*time.Second || c.Branch != "main" {
				return fmt.Sprintf("%+v", c)
			}
			return ""
		}},
		{"env list over file", map[string]string{"GITFLEET_HOSTNAMES": "e1.example,e2.example", "GITFLEET_SERVER": "https://x", "GITFLEET_BRANCH": ""}, nil,
			func(c serveConfig) string {
				if strings.Join(c.Hostnames, ",") != "e1.example,e2.example" || c.Branch != "main" {
					return fmt.Sprintf("hostnames %q branch %q", c.Hostnames, c.Branch)
				}
				return ""
			}},
		{"flags over env", map[string]string{"GITFLEET_HOSTNAMES": "e1.example", "GITFLEET_WEBHOOK_BURST": "9"},
			[]string{"--hostname", "a.example", "--smtp-insecure-plaintext=false"},
			func(c serveConfig) string {
				if strings.Join(c.Hostnames, ",") != "a.example" || c.WebhookBurst != 9 || c.SMTPInsecure {
					return fmt.Sprintf("hostnames %q burst %d insecure %v", c.Hostnames, c.WebhookBurst, c.SMTPInsecure)
				}
				return ""
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadServeConfig(pflagWith(t, append([]string{"--config", file}, tc.args...)...), environ(tc.env))
			if err != nil {
				t.Fatal(err)
			}
			if msg := tc.check(got); msg != "" {
				t.Error(msg)
			}
		})
	}
}
