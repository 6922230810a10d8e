package install

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
)

// moduleEnv is a modules directory and a work directory.
type moduleEnv struct {
	dir, work, log string
}

func newModuleEnv(t *testing.T) *moduleEnv {
	t.Helper()
	root := t.TempDir()
	e := &moduleEnv{dir: filepath.Join(root, "modules"), work: filepath.Join(root, "work"), log: filepath.Join(root, "calls.log")}
	if err := os.MkdirAll(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

// module writes a shell update module. cases are shell case branches; every
// call is logged as "<State>" to e.log.
func (e *moduleEnv) module(t *testing.T, name, cases string) {
	t.Helper()
	src := fmt.Sprintf(`#!/bin/sh
STATE="$1"
FILES="$2"
echo "$STATE" >> %q
case "$STATE" in
%s
esac
exit 0
`, e.log, cases)
	if err := os.WriteFile(filepath.Join(e.dir, name), []byte(src), 0o755); err != nil {
		t.Fatal(err)
	}
}

func (e *moduleEnv) opts() ModuleOptions {
	return ModuleOptions{
		Dir: e.dir, WorkDir: e.work,
		ArtifactName: "release-1", ArtifactGroup: "prod", DeviceType: "test-board",
		Exec:   OSExec{KillGrace: 200 * time.Millisecond},
		Logger: quiet,
	}
}

// calls returns the states the modules were called with, and forgets them.
func (e *moduleEnv) calls(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(e.log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(e.log)
	return strings.Fields(string(b))
}

func moduleArtifact(t *testing.T, typ string, files map[string][]byte, meta map[string]any) []byte {
	var specs []artifact.FileSpec
	for _, name := range sortedKeys(files) {
		specs = append(specs, memFile(name, files[name]))
	}
	p := artifact.ModuleImage(typ, specs, "release-2", artifact.Software{})
	p.MetaData = meta
	return build(t, artifact.Spec{Name: "release-2", Group: "prod", Payloads: []artifact.PayloadSpec{p}})
}

func sortedKeys(m map[string][]byte) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	for i := range keys {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] < keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	return keys
}

// downloadModule runs Download of payload 0 on a new Module.
func downloadModule(t *testing.T, opts ModuleOptions, data []byte) (*Module, error) {
	t.Helper()
	ar := open(t, data)
	m, err := NewModule(opts, Payload{Header: ar.Header(), Index: 0})
	if err != nil {
		t.Fatal(err)
	}
	return m, DownloadAll(context.Background(), ar, []Installer{m})
}

// streamingDownload is a Download branch that reads every stream into tmp/.
const streamingDownload = `Download)
    while :; do
        next=$(cat stream-next) || exit 1
        [ -z "$next" ] && break
        cat "$next" > "$FILES/tmp/$(basename "$next")" || exit 1
    done
    ;;`

func TestModuleStoredFiles(t *testing.T) {
	ctx := context.Background()
	e := newModuleEnv(t)
	dest := t.TempDir()
	e.module(t, "copy", fmt.Sprintf(`ArtifactInstall)
    cp "$FILES"/files/* %q/ || exit 1
    ;;
NeedsArtifactReboot) echo No ;;
SupportsRollback) echo Yes ;;`, dest))
	files := map[string][]byte{"a.conf": []byte("alpha\n"), "b.bin": pattern(300<<10, 7)}
	data := moduleArtifact(t, "copy", files, map[string]any{"dest": "/etc"})
	m, err := downloadModule(t, e.opts(), data)
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	tree := m.Tree()
	if want := filepath.Join(e.work, "payloads", "0000", "tree"); tree != want {
		t.Fatalf("tree %s, want %s", tree, want)
	}
	for name, content := range files {
		if got := readFile(t, filepath.Join(tree, "files", name)); !bytes.Equal(got, content) {
			t.Errorf("files/%s differs", name)
		}
	}
	for _, gone := range []string{"stream-next", "streams"} {
		if _, err := os.Lstat(filepath.Join(tree, gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still there after a non-streaming Download: %v", gone, err)
		}
	}
	// The File API, as Mender lays it out.
	for name, want := range map[string]string{
		"version":                "3",
		"current_artifact_name":  "release-1",
		"current_artifact_group": "prod",
		"current_device_type":    "test-board",
		"header/artifact_name":   "release-2",
		"header/artifact_group":  "prod",
		"header/payload_type":    "copy",
	} {
		if got := string(readFile(t, filepath.Join(tree, name))); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	var meta map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join(tree, "header/meta-data")), &meta); err != nil || meta["dest"] != "/etc" {
		t.Errorf("header/meta-data: %v %v", meta, err)
	}
	var ti artifact.TypeInfo
	if err := json.Unmarshal(readFile(t, filepath.Join(tree, "header/type-info")), &ti); err != nil || ti.Type != "copy" || ti.Provides["rootfs-image.copy.version"] != "release-2" {
		t.Errorf("header/type-info: %+v %v", ti, err)
	}
	var hi artifact.HeaderInfo
	if err := json.Unmarshal(readFile(t, filepath.Join(tree, "header/header-info")), &hi); err != nil || hi.Provides.Name != "release-2" || len(hi.Payloads) != 1 || hi.Payloads[0].Type != "copy" {
		t.Errorf("header/header-info: %+v %v", hi, err)
	}
	if fi, err := os.Stat(filepath.Join(tree, "tmp")); err != nil || !fi.IsDir() {
		t.Errorf("tmp/: %v", err)
	}

	if err := m.ArtifactInstall(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(dest, "b.bin")); !bytes.Equal(got, files["b.bin"]) {
		t.Error("module did not install b.bin")
	}
	if r, err := m.NeedsArtifactReboot(ctx); err != nil || r != RebootNo {
		t.Errorf("NeedsArtifactReboot: %v %v", r, err)
	}
	if ok, err := m.SupportsRollback(ctx); err != nil || !ok {
		t.Errorf("SupportsRollback: %v %v", ok, err)
	}
	if err := m.ArtifactCommit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tree); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tree after Cleanup: %v", err)
	}
	want := []string{"Download", "ArtifactInstall", "NeedsArtifactReboot", "SupportsRollback", "ArtifactCommit", "Cleanup"}
	if got := e.calls(t); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("calls %v, want %v", got, want)
	}
	// Cleanup again (a power cut after it): the module is not called again.
	if err := m.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.calls(t); len(got) != 0 {
		t.Errorf("second Cleanup called the module: %v", got)
	}
}

func TestModuleStreams(t *testing.T) {
	e := newModuleEnv(t)
	e.module(t, "stream", streamingDownload)
	files := map[string][]byte{
		"1-small": []byte("hello"),
		"2-large": pattern(3*MiB+17, 8),
		"3-empty": {},
	}
	m, err := downloadModule(t, e.opts(), moduleArtifact(t, "stream", files, nil))
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	for name, content := range files {
		if got := readFile(t, filepath.Join(m.Tree(), "tmp", name)); !bytes.Equal(got, content) {
			t.Errorf("streamed %s differs (%d bytes, want %d)", name, len(got), len(content))
		}
	}
	if _, err := os.Stat(filepath.Join(m.Tree(), "files")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("files/ exists after a streaming Download: %v", err)
	}
	// No files: the module reads the empty stream-next at once.
	m, err = downloadModule(t, e.opts(), build(t, artifact.Spec{Name: "empty", Payloads: []artifact.PayloadSpec{{Type: "stream"}}}))
	if err != nil {
		t.Fatalf("Download of an empty payload: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(m.Tree(), "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ holds %d entries", len(ents))
	}
}

func TestModuleDownloadFailures(t *testing.T) {
	files := map[string][]byte{"1": []byte("one"), "2": pattern(MiB, 1), "3": []byte("three")}
	for _, tc := range []struct {
		name   string
		branch string
		want   error
	}{
		{"exit 1 without streaming", `Download) exit 1 ;;`, ErrModuleFailed},
		{"exit 0 after one stream", `Download)
    next=$(cat stream-next); cat "$next" > /dev/null; exit 0 ;;`, ErrProtocol},
		{"exit 2 after one stream", `Download)
    next=$(cat stream-next); cat "$next" > /dev/null; exit 2 ;;`, ErrModuleFailed},
		{"stops reading a stream", `Download)
    next=$(cat stream-next); cat "$next" > /dev/null
    next=$(cat stream-next); head -c 10 "$next" > /dev/null; exit 0 ;;`, ErrProtocol},
		{"stops reading a stream, exit 4", `Download)
    next=$(cat stream-next); cat "$next" > /dev/null
    next=$(cat stream-next); head -c 10 "$next" > /dev/null; exit 4 ;;`, ErrModuleFailed},
		{"killed", `Download) kill -9 $$ ;;`, ErrModuleFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newModuleEnv(t)
			e.module(t, "m", tc.branch)
			_, err := downloadModule(t, e.opts(), moduleArtifact(t, "m", files, nil))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Download: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestModuleTamperedStream(t *testing.T) {
	for _, tc := range []struct{ name, branch string }{
		{"streaming", streamingDownload},
		{"stored", `Download) ;;`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newModuleEnv(t)
			e.module(t, "m", tc.branch)
			content := pattern(2*MiB, 5)
			data := moduleArtifact(t, "m", map[string][]byte{"image": content}, nil)
			at := bytes.Index(data, content[MiB:MiB+64])
			data[at+3] ^= 1
			_, err := downloadModule(t, e.opts(), data)
			if !errors.Is(err, artifact.ErrDigest) {
				t.Fatalf("Download: %v, want ErrDigest", err)
			}
		})
	}
}

func TestModuleInstallFailureAndRollback(t *testing.T) {
	ctx := context.Background()
	e := newModuleEnv(t)
	e.module(t, "m", `ArtifactInstall) echo "disk full" >&2; exit 3 ;;
SupportsRollback) echo Yes ;;
ArtifactRollback) echo "rolled back" ;;`)
	m, err := downloadModule(t, e.opts(), moduleArtifact(t, "m", map[string][]byte{"f": []byte("x")}, nil))
	if err != nil {
		t.Fatal(err)
	}
	err = m.ArtifactInstall(ctx)
	if !errors.Is(err, ErrModuleFailed) || exitCode(errors.Unwrap(err)) == 3 && !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("ArtifactInstall: %v", err)
	}
	if ok, err := m.SupportsRollback(ctx); err != nil || !ok {
		t.Fatalf("SupportsRollback: %v %v", ok, err)
	}
	for _, st := range []func(context.Context) error{m.ArtifactRollback, m.ArtifactFailure, m.Cleanup} {
		if err := st(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := "Download ArtifactInstall SupportsRollback ArtifactRollback ArtifactFailure Cleanup"
	if got := strings.Join(e.calls(t), " "); got != want {
		t.Errorf("calls %s, want %s", got, want)
	}
}

func TestModuleQueries(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		out      string
		reboot   Reboot
		rollback bool
		rebootOK bool
		rollOK   bool
	}{
		{"", RebootNo, false, true, true},
		{"No\n", RebootNo, false, true, true},
		{"Yes\n", RebootYes, true, true, true},
		{"Automatic", RebootAutomatic, false, true, false},
		{"yes", RebootNo, false, false, false},
		{"Maybe\n", RebootNo, false, false, false},
	} {
		e := newModuleEnv(t)
		e.module(t, "m", "")
		fx := &fakeExec{out: map[string]string{"NeedsArtifactReboot": tc.out, "SupportsRollback": tc.out}}
		opts := e.opts()
		opts.Exec = fx
		data := moduleArtifact(t, "m", nil, nil)
		m, err := NewModule(opts, Payload{Header: open(t, data).Header()})
		if err != nil {
			t.Fatal(err)
		}
		r, err := m.NeedsArtifactReboot(ctx)
		if (err == nil) != tc.rebootOK || r != tc.reboot || (err != nil && !errors.Is(err, ErrProtocol)) {
			t.Errorf("NeedsArtifactReboot answering %q: %v, %v", tc.out, r, err)
		}
		ok, err := m.SupportsRollback(ctx)
		if (err == nil) != tc.rollOK || ok != tc.rollback || (err != nil && !errors.Is(err, ErrProtocol)) {
			t.Errorf("SupportsRollback answering %q: %v, %v", tc.out, ok, err)
		}
		for _, c := range fx.calls {
			if c.Dir != m.Tree() || len(c.Args) != 2 || c.Args[1] != m.Tree() || c.Path != filepath.Join(e.dir, "m") {
				t.Errorf("invocation %+v", c)
			}
		}
	}
}

// fakeExec answers module calls without processes.
type fakeExec struct {
	out   map[string]string // stdout by state
	code  map[string]int    // exit status by state
	calls []Command
}

type fakeProcess struct{ err error }

func (p fakeProcess) Wait() error { return p.err }

type exitErr int

func (e exitErr) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitErr) ExitCode() int { return int(e) }

func (f *fakeExec) Start(ctx context.Context, c Command) (Process, error) {
	f.calls = append(f.calls, c)
	state := ""
	if len(c.Args) > 0 {
		state = c.Args[0]
	}
	if c.Stdout != nil {
		io.WriteString(c.Stdout, f.out[state])
	}
	if code := f.code[state]; code != 0 {
		return fakeProcess{exitErr(code)}, nil
	}
	return fakeProcess{}, nil
}

func TestModuleReboot(t *testing.T) {
	ctx := context.Background()
	e := newModuleEnv(t)
	e.module(t, "m", `NeedsArtifactReboot) echo Yes ;;
ArtifactReboot) touch "$FILES/tmp/rebooted" ;;`)
	m, err := downloadModule(t, e.opts(), moduleArtifact(t, "m", map[string][]byte{"f": []byte("x")}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := m.NeedsArtifactReboot(ctx); err != nil || r != RebootYes {
		t.Fatalf("NeedsArtifactReboot: %v %v", r, err)
	}
	if err := m.ArtifactReboot(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(m.Tree(), "tmp", "rebooted")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in   []Reboot
		want Reboot
		ok   bool
	}{
		{nil, RebootNo, true},
		{[]Reboot{RebootNo, RebootYes}, RebootYes, true},
		{[]Reboot{RebootAutomatic, RebootNo, RebootAutomatic}, RebootAutomatic, true},
		{[]Reboot{RebootYes, RebootAutomatic}, RebootNo, false},
		{[]Reboot{RebootAutomatic, RebootNo, RebootYes}, RebootNo, false},
	} {
		got, err := CombineReboots(tc.in...)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("CombineReboots(%v) = %v, %v", tc.in, got, err)
		}
	}
}

func TestModuleIdempotentStates(t *testing.T) {
	ctx := context.Background()
	e := newModuleEnv(t)
	e.module(t, "m", streamingDownload+`
ArtifactInstall) cat header/artifact_name > "$FILES/tmp/installed" ;;`)
	data := moduleArtifact(t, "m", map[string][]byte{"f": []byte("payload")}, nil)
	m, err := downloadModule(t, e.opts(), data)
	if err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(m.Tree(), "tmp", "stray")
	if err := os.WriteFile(stray, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Download again (a power cut in the middle of the first): a fresh tree.
	m, err = downloadModule(t, e.opts(), data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stray); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the second Download kept the first one's tmp/")
	}
	for range 2 {
		if err := m.ArtifactInstall(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A state after the tree was lost still runs, with the header files.
	if err := os.RemoveAll(m.Tree()); err != nil {
		t.Fatal(err)
	}
	for _, st := range []func(context.Context) error{m.ArtifactInstall, m.ArtifactFailure} {
		if err := st(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(readFile(t, filepath.Join(m.Tree(), "tmp", "installed"))); got != "release-2" {
		t.Fatalf("installed %q", got)
	}
}

func TestModuleTimeout(t *testing.T) {
	e := newModuleEnv(t)
	e.module(t, "m", `ArtifactInstall) trap '' TERM; sleep 30 ;;`)
	opts := e.opts()
	opts.Timeout = 100 * time.Millisecond
	data := moduleArtifact(t, "m", nil, nil)
	m, err := NewModule(opts, Payload{Header: open(t, data).Header()})
	if err != nil {
		t.Fatal(err)
	}
	err = m.ArtifactInstall(context.Background())
	if !errors.Is(err, ErrModuleFailed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ArtifactInstall: %v, want a timeout", err)
	}
}

func TestModuleMissing(t *testing.T) {
	e := newModuleEnv(t)
	if err := os.WriteFile(filepath.Join(e.dir, "noexec"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.module(t, "ok", "")
	for _, typ := range []string{"absent", "noexec"} {
		data := moduleArtifact(t, typ, nil, nil)
		if _, err := NewModule(e.opts(), Payload{Header: open(t, data).Header()}); !errors.Is(err, ErrNoModule) {
			t.Errorf("%s: %v, want ErrNoModule", typ, err)
		}
	}
	set := Installers{Modules: e.opts()}
	if got := strings.Join(set.Types(), ","); got != "ok" {
		t.Errorf("Types() = %s", got)
	}
	set.Rootfs = &RootfsOptions{}
	if got := strings.Join(set.Types(), ","); got != "rootfs-image,ok" {
		t.Errorf("Types() = %s", got)
	}
}

func TestDownloadAllPayloads(t *testing.T) {
	e := newModuleEnv(t)
	e.module(t, "stream", streamingDownload)
	e.module(t, "store", `Download) ;;`)
	e.module(t, "skip", `Download) exit 0 ;;`)
	p0 := artifact.ModuleImage("stream", []artifact.FileSpec{memFile("a", []byte("A")), memFile("b", []byte("B"))}, "multi", artifact.Software{})
	p1 := artifact.ModuleImage("store", []artifact.FileSpec{memFile("c", []byte("C"))}, "multi", artifact.Software{Name: "x"})
	p2 := artifact.ModuleImage("skip", nil, "multi", artifact.Software{Name: "y"})
	p3 := artifact.ModuleImage("store", []artifact.FileSpec{memFile("d", pattern(MiB, 3))}, "multi", artifact.Software{Name: "z"})
	data := build(t, artifact.Spec{Name: "multi", Payloads: []artifact.PayloadSpec{p0, p1, p2, p3}})
	ar := open(t, data)
	ins := newInstallers(t, Installers{Modules: e.opts()}, ar)
	if err := DownloadAll(context.Background(), ar, ins); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{"payloads/0000/tree/tmp/a", "A"},
		{"payloads/0000/tree/tmp/b", "B"},
		{"payloads/0001/tree/files/c", "C"},
		{"payloads/0002/tree/header/payload_type", "skip"},
		{"payloads/0003/tree/header/payload_type", "store"},
	} {
		if got := string(readFile(t, filepath.Join(e.work, c.path))); got != c.want {
			t.Errorf("%s = %q, want %q", c.path, got, c.want)
		}
	}
	if got := readFile(t, filepath.Join(e.work, "payloads/0003/tree/files/d")); !bytes.Equal(got, pattern(MiB, 3)) {
		t.Error("payload 3 file differs")
	}
	if err := DownloadAll(context.Background(), open(t, data), ins[:2]); !errors.Is(err, ErrPayload) {
		t.Errorf("too few installers: %v", err)
	}
}
