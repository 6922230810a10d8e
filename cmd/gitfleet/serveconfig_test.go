package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
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
	got, err := loadServeConfig(fs, func(k string) string { return env[k] })
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
	if _, err := loadServeConfig(fs, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), "brnach") {
		t.Errorf("unknown key in config file: %v", err)
	}
	if _, err := loadServeConfig(pflagWith(t), func(k string) string {
		if k == "GITFLEET_POLL_INTERVAL" {
			return "soon"
		}
		return ""
	}); err == nil || !strings.Contains(err.Error(), "GITFLEET_POLL_INTERVAL") {
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
