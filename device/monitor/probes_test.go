package monitor

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestListeningPortsNamesOwner(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	h := newHarness(t, Options{}, Check{Name: "ports", ListeningPorts: &ListeningPorts{Allow: []int{22}}})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	k := key("tcp/" + strconv.Itoa(port))
	wantOne(t, h.step(0), Raised, k, "127.0.0.1:"+strconv.Itoa(port), "pid "+strconv.Itoa(os.Getpid()), exe)
	wantNone(t, h.step(time.Minute), Raised, k) // raised once
	l.Close()
	wantOne(t, h.step(time.Minute), Cleared, k)

	// An allowed port raises nothing.
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	p2 := l2.Addr().(*net.TCPAddr).Port
	h2 := newHarness(t, Options{}, Check{Name: "ports", ListeningPorts: &ListeningPorts{Allow: []int{p2}}})
	wantNone(t, h2.step(0), Raised, key("tcp/"+strconv.Itoa(p2)))
}

func TestListeningUDP(t *testing.T) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	port := c.LocalAddr().(*net.UDPAddr).Port
	h := newHarness(t, Options{}, Check{Name: "ports", ListeningPorts: &ListeningPorts{}})
	wantOne(t, h.step(0), Raised, key("udp/"+strconv.Itoa(port)), "pid "+strconv.Itoa(os.Getpid()))
}

func TestSetuidAppears(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "old"), []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "old"), os.ModeSetuid|0o755)
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	h := newHarness(t, Options{}, Check{Name: "suid", Setuid: &Setuid{Paths: []string{dir}}})
	wantNone(t, h.step(0), Raised, nil) // the first scan is the baseline
	evil := filepath.Join(dir, "sub", "evil")
	if err := os.WriteFile(evil, []byte("x"), 0o755); err != nil {
		t.Fatal(err)
	}
	wantNone(t, h.step(10*time.Minute), Raised, nil)
	if err := os.Chmod(evil, os.ModeSetuid|0o755); err != nil {
		t.Fatal(err)
	}
	wantOne(t, h.step(10*time.Minute), Raised, key(evil), "new set-uid executable "+evil)
	os.Chmod(evil, 0o755)
	wantOne(t, h.step(10*time.Minute), Cleared, key(evil))
}

func TestFileChangeDigestInodeAndExpected(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "mender-connect")
	os.WriteFile(f, []byte("v1"), 0o755)
	h := newHarness(t, Options{}, Check{Name: "files", FileChange: &FileChange{Paths: []string{f}}})
	wantNone(t, h.step(0), Raised, nil)
	os.WriteFile(f, []byte("v2-evil"), 0o755)
	wantOne(t, h.step(5*time.Minute), Raised, key(f), "sha256 changed")
	os.WriteFile(f, []byte("v1"), 0o755) // restored in place
	wantOne(t, h.step(5*time.Minute), Cleared, key(f))

	// Same content, new inode.
	tmp := filepath.Join(dir, "copy")
	os.WriteFile(tmp, []byte("v1"), 0o755)
	if err := os.Rename(tmp, f); err != nil {
		t.Fatal(err)
	}
	wantOne(t, h.step(5*time.Minute), Raised, key(f), "inode changed", "same content")

	// An update announces the new digest: no alert for it, and the open
	// alert clears since the file now is what is expected.
	os.WriteFile(tmp, []byte("v3"), 0o755)
	os.Rename(tmp, f)
	if err := h.m.Expect(map[string]string{f: "sha256:" + sha256hex("v3")}); err != nil {
		t.Fatal(err)
	}
	evs := h.step(5 * time.Minute)
	wantNone(t, evs, Raised, nil)
	wantOne(t, evs, Cleared, key(f))
	wantNone(t, h.step(5*time.Minute), Raised, nil)
}

func TestProcessRestart(t *testing.T) {
	dir := t.TempDir()
	name := "gfmon" + strconv.Itoa(os.Getpid()%100000)
	cmd := startNamed(t, dir, name)
	h := newHarness(t, Options{}, Check{Name: "restart", ProcessRestart: &ProcessRestart{Name: name}})
	wantNone(t, h.step(0), Raised, nil)
	wantNone(t, h.step(30*time.Second), Raised, nil)
	cmd.Process.Kill()
	cmd.Wait()
	cmd2 := startNamed(t, dir, name)
	wantOne(t, h.step(30*time.Second), Raised, key(name),
		"from "+strconv.Itoa(cmd.Process.Pid)+" to "+strconv.Itoa(cmd2.Process.Pid), filepath.Join(dir, name))
	wantNone(t, h.step(30*time.Second), Raised, nil)
}

func TestServiceByProcessName(t *testing.T) {
	dir := t.TempDir()
	name := "gfsvc" + strconv.Itoa(os.Getpid()%100000)
	h := newHarness(t, Options{}, Check{Name: "svc", Service: &Service{Name: name}})
	wantOne(t, h.step(0), Raised, key(name), "no process named "+name)
	startNamed(t, dir, name)
	wantOne(t, h.step(30*time.Second), Cleared, key(name))
}

func TestServiceUnitCgroup(t *testing.T) {
	root := t.TempDir()
	unit := filepath.Join(root, "sys/fs/cgroup/system.slice/app.service")
	os.MkdirAll(unit, 0o755)
	os.WriteFile(filepath.Join(unit, "cgroup.procs"), []byte("123\n"), 0o644)
	h := newHarness(t, Options{Root: root}, Check{Name: "svc", Service: &Service{Name: "app.service"}})
	wantNone(t, h.step(0), Raised, nil)
	os.WriteFile(filepath.Join(unit, "cgroup.procs"), nil, 0o644)
	wantOne(t, h.step(30*time.Second), Raised, key("app.service"), "no running process")
}

func TestTrafficOverLoopback(t *testing.T) {
	const limit = 64 << 20
	h := newHarness(t, Options{}, Check{Name: "uplink", Traffic: &Traffic{Interface: "lo", MaxBytes: limit, Window: time.Hour}})
	wantNone(t, h.step(0), Raised, nil)
	pushLoopback(t, 2*limit)
	e := wantOne(t, h.step(time.Minute), Raised, nil, "lo moved", "over the 67108864 allowed per 1h0m0s")
	wantNone(t, h.step(time.Minute), Raised, nil) // once per window
	// The next window starts afresh: the condition recovers.
	wantOne(t, h.step(time.Hour), Cleared, key(e.Key))
}

func pushLoopback(t *testing.T, n int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(io.Discard, c)
		done <- err
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for sent := int64(0); sent < n; sent += int64(len(buf)) {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestTrafficMissingInterfaceIsOneCheckError(t *testing.T) {
	h := newHarness(t, Options{}, Check{Name: "uplink", Traffic: &Traffic{Interface: "nosuch0", MaxBytes: 1}})
	evs := h.step(0)
	wantOne(t, evs, CheckError, nil, "interface nosuch0")
	wantNone(t, evs, Raised, nil)
	for i := 0; i < 3; i++ {
		wantNone(t, h.step(time.Minute), CheckError, nil)
	}
}

func TestRootLoginAuthLog(t *testing.T) {
	dir := t.TempDir()
	auth := filepath.Join(dir, "auth.log")
	os.WriteFile(auth, []byte("Dec  1 00:00:00 dev sshd[1]: Failed password for root from 10.0.0.9 port 22 ssh2\n"), 0o640)
	h := newHarness(t, Options{}, Check{Name: "root", Expiry: time.Hour, RootLogin: &RootLogin{Log: auth}})
	wantNone(t, h.step(0), Raised, nil) // history is not news
	appendFile(t, auth, "Dec  2 05:00:00 dev sshd[77]: Failed password for alice from 10.0.0.9 port 22 ssh2\n")
	wantNone(t, h.step(5*time.Second), Raised, nil)
	ssh := "Dec  2 05:00:01 dev sshd[78]: Failed password for root from 203.0.113.7 port 4242 ssh2"
	appendFile(t, auth, ssh+"\n")
	wantOne(t, h.step(5*time.Second), Raised, nil, ssh)
	// A second attempt while the alert is open: no second alert, and the
	// expiry still counts from the first.
	appendFile(t, auth, "Dec  2 05:30:00 dev sshd[79]: Failed password for root from 203.0.113.7 port 4243 ssh2\n")
	wantNone(t, h.step(30*time.Minute), Raised, nil)
	wantOne(t, h.step(30*time.Minute), Expired, nil)
	sudo := "Dec  2 06:10:00 dev sudo: pam_unix(sudo:auth): authentication failure; logname=root uid=1000 euid=0 tty=/dev/pts/0 ruser=bob rhost=  user=bob"
	appendFile(t, auth, sudo+"\n")
	wantOne(t, h.step(5*time.Second), Raised, nil, sudo)
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func TestLibraryInjection(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	if err := os.Symlink("/proc", filepath.Join(root, "proc")); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, Options{Root: root}, Check{Name: "inject", LibraryInjection: &LibraryInjection{}})
	wantNone(t, h.step(0), Raised, key("/etc/ld.so.preload"))
	os.WriteFile(filepath.Join(root, "etc/ld.so.preload"), []byte("/usr/lib/libevil.so\n"), 0o644)
	wantOne(t, h.step(5*time.Minute), Raised, key("/etc/ld.so.preload"), "/usr/lib/libevil.so")

	name := "gfinj" + strconv.Itoa(os.Getpid()%100000)
	cmd := startNamed(t, t.TempDir(), name, "LD_PRELOAD=/tmp/gitfleet-test-libhook.so")
	k := key("LD_PRELOAD/" + strconv.Itoa(cmd.Process.Pid))
	wantOne(t, h.step(5*time.Minute), Raised, k, name, "LD_PRELOAD=/tmp/gitfleet-test-libhook.so")
	cmd.Process.Kill()
	cmd.Wait()
	wantOne(t, h.step(5*time.Minute), Cleared, k)
}

func TestWifiSSIDViaWpaSupplicant(t *testing.T) {
	root, err := os.MkdirTemp("", "gfwifi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.MkdirAll(filepath.Join(root, "proc/net"), 0o755)
	os.MkdirAll(filepath.Join(root, "sys/class/net/wlan0/wireless"), 0o755)
	os.MkdirAll(filepath.Join(root, "run/wpa_supplicant"), 0o755)
	os.WriteFile(filepath.Join(root, "proc/net/wireless"), []byte(
		"Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n"+
			" face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"+
			" wlan0: 0000   70.  -40.  -256        0      0      0      0      0        0\n"), 0o644)
	ssid := make(chan string, 1)
	ssid <- "factory-ap"
	// A wpa_supplicant control socket answering STATUS, as the daemon does.
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(root, "run/wpa_supplicant/wlan0"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		buf := make([]byte, 256)
		cur := ""
		for {
			n, from, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			select {
			case cur = <-ssid:
			default:
			}
			if string(buf[:n]) == "STATUS" {
				conn.WriteToUnix([]byte("bssid=00:11:22:33:44:55\nssid="+cur+"\nwpa_state=COMPLETED\n"), from)
			}
		}
	}()
	h := newHarness(t, Options{Root: root}, Check{Name: "ap", Wifi: &Wifi{}})
	wantNone(t, h.step(0), Raised, nil)
	wantNone(t, h.step(time.Minute), Raised, nil)
	ssid <- "evil-twin"
	wantOne(t, h.step(time.Minute), Raised, key("wlan0"), `from "factory-ap" to "evil-twin"`)

	h2 := newHarness(t, Options{Root: root}, Check{Name: "ap", Wifi: &Wifi{Interface: "wlan0", Expected: "factory-ap"}})
	wantOne(t, h2.step(0), Raised, key("wlan0"), `on SSID "evil-twin", expected "factory-ap"`)

	// Without wpa_supplicant: one check error, naming why.
	os.Remove(filepath.Join(root, "run/wpa_supplicant/wlan0"))
	h3 := newHarness(t, Options{Root: root}, Check{Name: "ap", Wifi: &Wifi{}})
	wantOne(t, h3.step(0), CheckError, nil, "no wpa_supplicant control socket")
	wantNone(t, h3.step(time.Minute), CheckError, nil)
}

func TestFailedDeployments(t *testing.T) {
	h := newHarness(t, Options{}, Check{Name: "deploys", Expiry: time.Minute, FailedDeployments: &FailedDeployments{}})
	h.m.ReportDeployment(DeploymentOutcome{ID: "d1", Artifact: "os-2", Status: "success"})
	h.m.ReportDeployment(DeploymentOutcome{ID: "d2", Artifact: "os-3", Status: "failure"})
	wantOne(t, h.step(0), Raised, key("d2"), "deployment d2 of os-3 failed")
	wantOne(t, h.step(time.Minute), Expired, key("d2"))
	h.m.ReportDeployment(DeploymentOutcome{ID: "d2", Artifact: "os-3", Status: "failure"}) // reported again
	wantNone(t, h.step(10*time.Second), Raised, nil)
	h.m.ReportDeployment(DeploymentOutcome{ID: "d3", Artifact: "os-3", Status: "failure"})
	wantOne(t, h.step(10*time.Second), Raised, key("d3"))
}

func sha256hex(s string) string {
	d, _ := fileDigestOf(strings.NewReader(s))
	return d
}

func TestServiceUnitCgroupV1(t *testing.T) {
	root := t.TempDir()
	unit := filepath.Join(root, "sys/fs/cgroup/systemd/system.slice/app.service")
	os.MkdirAll(unit, 0o755)
	os.WriteFile(filepath.Join(unit, "cgroup.procs"), []byte("123\n"), 0o644)
	h := newHarness(t, Options{Root: root}, Check{Name: "svc", Service: &Service{Name: "app.service"}})
	wantNone(t, h.step(0), Raised, nil)
	os.Remove(filepath.Join(unit, "cgroup.procs"))
	wantOne(t, h.step(30*time.Second), Raised, key("app.service"))

	// No systemd at all: a check error, not an alert.
	h2 := newHarness(t, Options{Root: t.TempDir()}, Check{Name: "svc", Service: &Service{Name: "app.service"}})
	evs := h2.step(0)
	wantOne(t, evs, CheckError, nil, "no systemd cgroup hierarchy")
	wantNone(t, evs, Raised, nil)
}

func TestPartialScanClearsNothing(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.WriteFile(a, []byte("a1"), 0o755)
	os.WriteFile(b, []byte("b1"), 0o755)
	h := newHarness(t, Options{}, Check{Name: "files", FileChange: &FileChange{Paths: []string{a, b}}})
	h.step(0)
	os.WriteFile(a, []byte("a2"), 0o755)
	os.WriteFile(b, []byte("b2"), 0o755)
	wantOne(t, h.step(5*time.Minute), Raised, key(a))
	// a cannot be read for a while (a directory in its place here; no
	// permission or an I/O error on a real device): a check error, and a's
	// alert stays open since nobody saw it recover.
	os.Remove(a)
	os.Mkdir(a, 0o755)
	evs := h.step(5 * time.Minute)
	wantOne(t, evs, CheckError, nil, a)
	wantNone(t, evs, Cleared, nil)
}

// A file-change alert that expired while the file stayed changed is quiet;
// a further, different change raises it again.
func TestFileChangeAfterExpiryRaisesAgain(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "sshd_config")
	os.WriteFile(f, []byte("PermitRootLogin no\n"), 0o644)
	h := newHarness(t, Options{}, Check{Name: "files", Expiry: time.Hour, FileChange: &FileChange{Paths: []string{f}}})
	wantNone(t, h.step(0), Raised, nil)
	os.WriteFile(f, []byte("PermitRootLogin yes\n"), 0o644)
	wantOne(t, h.step(5*time.Minute), Raised, key(f), "sha256 changed")
	wantOne(t, h.step(time.Hour), Expired, key(f))
	wantNone(t, h.step(5*time.Minute), Raised, nil) // still changed: quiet
	os.WriteFile(f, []byte("PermitRootLogin yes\nPasswordAuthentication yes\n"), 0o644)
	wantOne(t, h.step(5*time.Minute), Raised, key(f), "sha256 changed")
}

// Watched trees a device does not have are skipped; only when none exists
// is the check in error.
func TestSetuidMissingPaths(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, Options{}, Check{Name: "suid", Setuid: &Setuid{Paths: []string{filepath.Join(dir, "nope"), dir}}})
	wantNone(t, h.step(0), CheckError, nil)
	evil := filepath.Join(dir, "evil")
	os.WriteFile(evil, []byte("x"), 0o755)
	os.Chmod(evil, os.ModeSetuid|0o755)
	wantOne(t, h.step(10*time.Minute), Raised, key(evil))

	h2 := newHarness(t, Options{}, Check{Name: "suid", Setuid: &Setuid{Paths: []string{filepath.Join(dir, "nope")}}})
	wantOne(t, h2.step(0), CheckError, nil, "none of the watched paths exists")
}
