package main

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/artifact/artifacttest"
)

// TestAttackAugmentedFiles: `gitfleet artifact verify --key` and `read
// --key` refuse an artifact whose signature leaves files uncovered (exit 1,
// the reason on stderr, nothing on stdout).
func TestAttackAugmentedFiles(t *testing.T) {
	dir := t.TempDir()
	keys := genKeys(t, dir, "ecdsa")
	priv, err := os.ReadFile(keys["ecdsa"].priv)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := artifact.LoadSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	data, err := artifacttest.Augmented(artifacttest.AugmentedOptions{
		Signer:    signer,
		Signed:    map[string][]byte{"run.sh": []byte("#!/bin/sh\necho signed\n")},
		Augmented: map[string][]byte{"evil.sh": []byte("#!/bin/sh\necho unsigned\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	art := filepath.Join(dir, "augmented.mender")
	if err := os.WriteFile(art, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"verify --key of a signed artifact + file listed only in manifest-augment → exit 1, augmented content refused",
			[]string{"artifact", "verify", art, "-q", "-k", keys["ecdsa"].pub}},
		{"read --key of the same artifact → exit 1, augmented content refused",
			[]string{"artifact", "read", art, "-q", "-k", keys["ecdsa"].pub}},
		{"read --json --key of the same artifact → exit 1, augmented content refused",
			[]string{"artifact", "read", art, "-q", "--json", "-k", keys["ecdsa"].pub}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := gitfleet(t, tc.args...)
			if exitCode(err) != 1 || err == nil || !strings.Contains(err.Error(), "augmented content is not covered by the signature") ||
				!strings.Contains(err.Error(), "data/0000/evil.sh") {
				t.Fatalf("exit %d, error %v; want exit 1 refusing data/0000/evil.sh", exitCode(err), err)
			}
			if out != "" {
				t.Errorf("stdout %q", out)
			}
		})
	}
	// Without a key the artifact reads as mender-artifact reads it, and the
	// summary says what the signature does not cover.
	summary := mustGitfleet(t, "artifact", "read", "-q", art)
	if !strings.Contains(summary, "Not covered by the signature: manifest-augment, data/0000/evil.sh") {
		t.Errorf("summary without a key:\n%s", summary)
	}
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// gitfleetBinary builds the real gitfleet binary once per test process.
func gitfleetBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gitfleet-attack-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "gitfleet")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// runServeBinary runs `gitfleet serve args…` with env until its output matches
// until (then SIGTERM) or it exits; it returns everything it printed and
// its exit code.
func runServeBinary(t *testing.T, env []string, until string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(gitfleetBinary(t), append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	var out lockedBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return out.String(), exitStatus(err)
		case <-tick.C:
			if until != "" && strings.Contains(out.String(), until) {
				cmd.Process.Signal(syscall.SIGTERM)
				until = ""
			}
		case <-deadline:
			cmd.Process.Kill()
			<-done
			t.Fatalf("serve neither printed %q nor exited:\n%s", until, out.String())
		}
	}
}

func exitStatus(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAttackSecretsInLogs: no secret given to `gitfleet serve` (in a flag,
// the environment, the config file or a *_file) ever reaches its output,
// on the way in, at work or on the way out with an error.
func TestAttackSecretsInLogs(t *testing.T) {
	secrets := []string{"fleet-bot-USERSECRET1", "repo-pass-SECRET2", "repo-token-SECRET3", "webhook-SECRET4",
		"mgmt-SECRET5", "redis-pass-SECRET6", "redis-user-SECRET7"}
	dir := t.TempDir()
	hookFile := filepath.Join(dir, "webhook")
	writeFile(t, hookFile, []byte("webhook-SECRET4\n"))
	config := filepath.Join(dir, "gitfleet.yaml")
	writeFile(t, config, []byte("management_token: mgmt-SECRET5\n"))
	common := func(data string, extra ...string) []string {
		return append([]string{"--config", config, "--webhook-secret-file", hookFile, "--data-dir", filepath.Join(dir, data),
			"--listen", "127.0.0.1:0", "--log-level", "debug", "--poll-interval", "1s"}, extra...)
	}
	env := []string{"GITFLEET_REPO_TOKEN=repo-token-SECRET3"}
	repoWithCreds := "https://fleet-bot-USERSECRET1:repo-pass-SECRET2@127.0.0.1:1/fleet.git"
	redisURL := func(port string) string {
		return "redis://redis-user-SECRET7:redis-pass-SECRET6@127.0.0.1:" + port + "/0"
	}
	cases := []struct {
		name     string
		args     []string
		until    string // "" waits for the exit
		wantFail bool
	}{
		{"credentials in --repo, tokens in env, file and config, repository unreachable → none logged",
			common("a", "--repo", repoWithCreds), `"msg":"fetch failed"`, false},
		{"password in an unreachable --redis URL → none logged",
			common("b", "--repo", repoWithCreds, "--redis", redisURL("1")), `"msg":"redis does not answer yet"`, false},
		{"passwords in the --redis URLs of a cluster → none logged",
			common("c", "--repo", repoWithCreds, "--redis", redisURL("1")+","+redisURL("2")), `"msg":"starting gitfleet controller"`, false},
		{"password in a malformed --redis URL → exit non-zero, none in the error",
			common("d", "--repo", repoWithCreds, "--redis", "redis://redis-user-SECRET7:redis-pass-SECRET6@127.0.0.1:1/notadb"), "", true},
		{"credentials in a --repo URL with an impossible port → none logged",
			common("e", "--repo", "https://fleet-bot-USERSECRET1:repo-pass-SECRET2@127.0.0.1:99999999/fleet.git"), `"msg":"fetch failed"`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, code := runServeBinary(t, env, c.until, c.args...)
			if c.wantFail && code == 0 {
				t.Fatalf("exit 0:\n%s", out)
			}
			if !strings.Contains(out, "starting gitfleet controller") && !c.wantFail {
				t.Fatalf("no start-up line:\n%s", out)
			}
			for _, s := range secrets {
				if strings.Contains(out, s) {
					t.Errorf("%s appears in the output:\n%s", s, out)
				}
			}
		})
	}

	// The mechanism behind it, for what a library might log or return.
	cfg := defaultServeConfig()
	cfg.Repo, cfg.RepoToken, cfg.WebhookSecret, cfg.ManagementToken = repoWithCreds, "repo-token-SECRET3", "webhook-SECRET4", "mgmt-SECRET5"
	cfg.Redis = redisURL("6379")
	r := newRedactor(cfg.secretValues())
	leaky := fmt.Errorf("Get %q: authentication required (token repo-token-SECRET3, redis %s, any://someone:else@host)", repoWithCreds, cfg.Redis)
	for _, c := range []struct {
		name string
		out  func() string
	}{
		{"a library error quoting credentials, logged → redacted", func() string {
			var b bytes.Buffer
			newLogger(&b, "debug", r).Error("fetch", "err", leaky, "url", cfg.Repo, "group", slog.GroupValue(slog.String("x", "webhook-SECRET4")))
			return b.String()
		}},
		{"a library error quoting credentials, returned by serve → redacted", func() string { return r.Error(leaky).Error() }},
		{"the settings line, even through a logger that redacts nothing → secrets and URL user information redacted", func() string {
			var b bytes.Buffer
			slog.New(slog.NewJSONHandler(&b, nil)).Info("starting", "settings", cfg)
			return b.String()
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := c.out()
			for _, s := range append(secrets, "someone:else") {
				if strings.Contains(out, s) {
					t.Errorf("%s appears in %s", s, out)
				}
			}
			if !strings.Contains(out, redactedText) {
				t.Errorf("nothing redacted: %s", out)
			}
		})
	}
}

// TestAttackHostHeader: download URLs are built on a configured or derived
// public URL, never on the Host a request names; serve refuses to start
// when it cannot tell what that URL is.
func TestAttackHostHeader(t *testing.T) {
	dir := t.TempDir()
	base := func(data string, extra ...string) []string {
		return append([]string{"--repo", "file://" + filepath.Join(dir, "no-repo"), "--data-dir", filepath.Join(dir, data),
			"--poll-interval", "1h"}, extra...)
	}
	publicLine := regexp.MustCompile(`"msg":"download URLs are built on the public URL","public_url":"([^"]+)"`)
	cases := []struct {
		name   string
		args   []string
		code   int    // exit code; 0: started (then stopped)
		want   string // in the output: the reason, or the public URL's pattern
		secret string // must not appear
	}{
		{"listening on every interface without --public-url → refused at start (exit 2)",
			base("a", "--listen", ":0"), 2, "--public-url", ""},
		{"listening on 0.0.0.0 without --public-url → refused at start (exit 2)",
			base("b", "--listen", "0.0.0.0:0"), 2, "--public-url", ""},
		{"--public-url over plain http → refused at start (exit 2)",
			base("c", "--listen", ":0", "--public-url", "http://gitfleet.example"), 2, "https", ""},
		{"--public-url with a user and password → refused at start, the password not echoed",
			base("d", "--listen", ":0", "--public-url", "https://u:url-pass-SECRET@gitfleet.example"), 2, "user name or password", "url-pass-SECRET"},
		{"--public-url with a path → refused at start (exit 2)",
			base("e", "--listen", ":0", "--public-url", "https://gitfleet.example/x?y"), 2, "without a path", ""},
		{"--public-url given → download URLs on it",
			base("f", "--listen", ":0", "--public-url", "https://gitfleet.example:8443/"), 0, `^https://gitfleet\.example:8443$`, ""},
		{"listening on a concrete address → download URLs on it, with the port in use",
			base("g", "--listen", "127.0.0.1:0"), 0, `^https://127\.0\.0\.1:[1-9][0-9]*$`, ""},
		{"every interface and one development-certificate --hostname → download URLs on that name",
			base("h", "--listen", ":0", "--hostname", "gitfleet.test"), 0, `^https://gitfleet\.test:[1-9][0-9]*$`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			until := ""
			if c.code == 0 {
				until = `"msg":"serving HTTPS"`
			}
			out, code := runServeBinary(t, nil, until, c.args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d:\n%s", code, c.code, out)
			}
			if c.code != 0 {
				if !strings.Contains(out, c.want) || strings.Contains(out, "serving HTTPS") {
					t.Fatalf("want a refusal naming %q before serving:\n%s", c.want, out)
				}
			} else {
				m := publicLine.FindStringSubmatch(out)
				if m == nil || !regexp.MustCompile(c.want).MatchString(m[1]) {
					t.Fatalf("public URL %v, want %s:\n%s", m, c.want, out)
				}
			}
			if c.secret != "" && strings.Contains(out, c.secret) {
				t.Fatalf("%s echoed:\n%s", c.secret, out)
			}
		})
	}
}
