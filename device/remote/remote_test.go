package remote

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/vmihailenco/msgpack/v5"
)

func allOn() Options {
	return Options{Terminal: true, FileTransfer: true, PortForward: true}
}

// shellOutput collects the shell's output in sid until it contains want.
func (p *peer) shellOutput(sid, want string) string {
	p.t.Helper()
	var out strings.Builder
	for !strings.Contains(out.String(), want) {
		m := p.next(sid, func(m *wire.Msg) bool { return m.Header.Proto == wire.ProtoShell })
		switch m.Header.MsgType {
		case wire.TypeShell:
			out.Write(m.Body)
		case wire.TypeStop:
			p.t.Fatalf("the shell stopped (%s) before printing %q:\n%s", m.Body, want, out.String())
		}
	}
	return out.String()
}

// TestShell: a shell on a pseudo-terminal of the requested size, typed
// input and its output, a resize, the operator's stop ending the process
// group, and a shell that exits on its own reported with a stop.
func TestShell(t *testing.T) {
	fs := startServer(t)
	startClient(t, fs, Options{Terminal: true})
	p := fs.connect(t)

	// mender-cli terminal opens with a shell "new" (no control open).
	p.send(wire.New(wire.ProtoShell, wire.TypeNew, "s1").With(wire.PropWidth, int64(100)).With(wire.PropHeight, int64(30)).With(wire.PropUserID, "ada"))
	m := p.next("s1", is(wire.ProtoShell, wire.TypeNew))
	if st, _ := m.IntProp(wire.PropStatus); st != wire.ShellNormal {
		t.Fatalf("shell new answered with status %d: %s", st, m.Body)
	}
	// The status property is an int64, as mender-cli reads it.
	if raw := m.Header.Properties[wire.PropStatus]; len(raw) != 9 || raw[0] != 0xd3 {
		t.Errorf("status encoded as % x, want a msgpack int64", raw)
	}
	p.send(wire.New(wire.ProtoShell, wire.TypeShell, "s1").WithBody([]byte("echo marker-$((6*7)); stty size; echo $$ > /dev/null\n")))
	out := p.shellOutput("s1", "30 100")
	if !strings.Contains(out, "marker-42") {
		t.Fatalf("output lacks marker-42:\n%s", out)
	}
	p.send(wire.New(wire.ProtoShell, wire.TypeResize, "s1").With(wire.PropWidth, int64(120)).With(wire.PropHeight, int64(50)))
	p.send(wire.New(wire.ProtoShell, wire.TypeShell, "s1").WithBody([]byte("stty size\n")))
	p.shellOutput("s1", "50 120")

	// A background job in the shell's process group ends with it.
	p.send(wire.New(wire.ProtoShell, wire.TypeShell, "s1").WithBody([]byte("sleep 300 & echo job-$!\n")))
	jobRE := regexp.MustCompile(`job-([0-9]+)`)
	out = ""
	for !jobRE.MatchString(out) {
		m := p.next("s1", is(wire.ProtoShell, wire.TypeShell))
		out += string(m.Body)
	}
	pid, _ := strconv.Atoi(jobRE.FindStringSubmatch(out)[1])
	if syscall.Kill(pid, 0) != nil {
		t.Fatalf("the job %d is not running", pid)
	}
	p.send(wire.New(wire.ProtoShell, wire.TypeStop, "s1"))
	p.next("s1", is(wire.ProtoShell, wire.TypeStop))
	deadline := time.Now().Add(wait)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("the shell's job %d still runs after the stop", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Input after the stop is refused.
	p.send(wire.New(wire.ProtoShell, wire.TypeShell, "s1").WithBody([]byte("echo nope\n")))
	if m := p.next("s1", is(wire.ProtoShell, wire.TypeShell)); !strings.Contains(string(m.Body), "no shell") {
		t.Fatalf("input without a shell answered with %q", m.Body)
	}
	p.send(wire.New(wire.ProtoControl, wire.TypeClose, "s1"))

	// A shell that exits: the operator gets a stop.
	p.send(wire.New(wire.ProtoShell, wire.TypeNew, "s2"))
	p.next("s2", is(wire.ProtoShell, wire.TypeNew))
	p.send(wire.New(wire.ProtoShell, wire.TypeShell, "s2").WithBody([]byte("exit 3\n")))
	m = p.next("s2", is(wire.ProtoShell, wire.TypeStop))
	if !strings.Contains(string(m.Body), "exit status 3") {
		t.Errorf("stop after exit says %q", m.Body)
	}
}

// TestFileTransfer: stat, a download in acknowledged chunks, an upload
// with its mode, into a directory under the source's name, and the
// protocol's errors (relative path, missing file, directory).
func TestFileTransfer(t *testing.T) {
	fs := startServer(t)
	startClient(t, fs, Options{FileTransfer: true})
	p := fs.connect(t)
	dir := t.TempDir()

	acc := p.open("f1")
	if len(acc.Protocols) != 1 || acc.Protocols[0] != wire.ProtoFileTransfer {
		t.Fatalf("accept offers %v, want file transfer only", acc.Protocols)
	}
	data := make([]byte, 700<<10+123)
	rand.Read(data)
	src := filepath.Join(dir, "down.bin")
	if err := os.WriteFile(src, data, 0o640); err != nil {
		t.Fatal(err)
	}
	p.send(wire.New(wire.ProtoFileTransfer, wire.TypeStat, "f1").WithBody(wire.MustMarshal(wire.Path{Path: &src})))
	m := p.next("f1", nil)
	var fi wire.FileInfo
	if m.Header.MsgType != wire.TypeFileInfo || msgpack.Unmarshal(m.Body, &fi) != nil || fi.Size == nil || *fi.Size != int64(len(data)) || fi.Mode == nil || os.FileMode(*fi.Mode) != 0o640 {
		t.Fatalf("stat answered %q %+v", m.Header.MsgType, fi)
	}

	// Download: acknowledge every 10 chunks, as the relay does; count
	// how far the device runs ahead.
	p.send(wire.New(wire.ProtoFileTransfer, wire.TypeGetFile, "f1").WithBody(wire.MustMarshal(wire.Path{Path: &src})))
	var got bytes.Buffer
	var acked int64
	chunks, maxAhead := 0, int64(0)
	for {
		m := p.next("f1", nil)
		if m.Header.MsgType != wire.TypeChunk {
			t.Fatalf("download: %q: %s", m.Header.MsgType, errText(m))
		}
		off, _ := m.IntProp(wire.PropOffset)
		if off != int64(got.Len()) {
			t.Fatalf("chunk at offset %d, expected %d", off, got.Len())
		}
		if len(m.Body) > chunkSize {
			t.Fatalf("chunk of %d bytes", len(m.Body))
		}
		got.Write(m.Body)
		maxAhead = max(maxAhead, int64(got.Len())-acked)
		if len(m.Body) == 0 {
			p.send(wire.New(wire.ProtoFileTransfer, wire.TypeAck, "f1").With(wire.PropOffset, int64(got.Len())))
			break
		}
		if chunks++; chunks%10 == 0 {
			acked = int64(got.Len())
			p.send(wire.New(wire.ProtoFileTransfer, wire.TypeAck, "f1").With(wire.PropOffset, acked))
		}
	}
	if !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("downloaded %d bytes of %d, equal %t", got.Len(), len(data), bytes.Equal(got.Bytes(), data))
	}
	if maxAhead > window*chunkSize {
		t.Errorf("the device ran %d bytes ahead of the acknowledgements, more than its window of %d", maxAhead, window*chunkSize)
	}

	// Upload into a directory: the file takes the source's name and the
	// requested mode.
	up := make([]byte, 300<<10+7)
	rand.Read(up)
	srcName, mode := "/operator/side/up.bin", uint32(0o600)
	p.send(wire.New(wire.ProtoFileTransfer, wire.TypePutFile, "f1").WithBody(wire.MustMarshal(wire.UploadRequest{SrcPath: &srcName, Path: &dir, Mode: &mode})))
	if m := p.next("f1", nil); m.Header.MsgType != wire.TypeAck {
		t.Fatalf("put_file answered with %q: %s", m.Header.MsgType, errText(m))
	}
	var off int64
	for i := 0; ; i++ {
		end := min(int(off)+chunkSize, len(up))
		c := wire.New(wire.ProtoFileTransfer, wire.TypeChunk, "f1").With(wire.PropOffset, off)
		if int(off) < len(up) {
			c.Body = up[off:end]
		}
		p.send(c)
		if c.Body == nil {
			break
		}
		off = int64(end)
	}
	for {
		m := p.next("f1", nil)
		if m.Header.MsgType != wire.TypeAck {
			t.Fatalf("upload: %q: %s", m.Header.MsgType, errText(m))
		}
		if o, _ := m.IntProp(wire.PropOffset); o == int64(len(up)) {
			break
		}
	}
	dst := filepath.Join(dir, "up.bin")
	b, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(b, up) {
		t.Fatalf("uploaded %d bytes; the device has %d (%v)", len(up), len(b), err)
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o600 {
		t.Errorf("uploaded file mode %v, want 0600", st.Mode())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*upload*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}

	// Errors, each in the protocol's shape.
	for _, tc := range []struct {
		typ, path, want string
	}{
		{wire.TypeStat, "etc/passwd", "not absolute"},
		{wire.TypeGetFile, "relative", "not absolute"},
		{wire.TypeGetFile, filepath.Join(dir, "missing"), "no such file or directory"},
		{wire.TypeGetFile, dir, "not a regular file"},
		{wire.TypePutFile, "up.bin", "not absolute"},
	} {
		pth := tc.path
		p.send(wire.New(wire.ProtoFileTransfer, tc.typ, "f1").WithBody(wire.MustMarshal(wire.Path{Path: &pth})))
		m := p.next("f1", nil)
		if m.Header.MsgType != wire.TypeError || !strings.Contains(errText(m), tc.want) {
			t.Errorf("%s %s: %q %q, want an error saying %q", tc.typ, tc.path, m.Header.MsgType, errText(m), tc.want)
		}
		var e wire.TypedError
		if msgpack.Unmarshal(m.Body, &e) != nil || e.MessageType == nil || *e.MessageType != tc.typ {
			t.Errorf("%s %s: error names message type %v", tc.typ, tc.path, e.MessageType)
		}
	}
	// Shell messages are refused: the terminal is off.
	p.send(wire.New(wire.ProtoShell, wire.TypeNew, "f1"))
	if m := p.next("f1", is(wire.ProtoShell, wire.TypeNew)); !strings.Contains(string(m.Body), "terminal is disabled") {
		t.Errorf("shell new with the terminal off: %q", m.Body)
	}
}

// TestPortForward: a connection to an allowed loopback echo service
// carries data both ways with acknowledgements; a host:port outside the
// allow list and udp are refused.
func TestPortForward(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)

	fs := startServer(t)
	startClient(t, fs, Options{PortForward: true, PortForwardAllow: []string{"127.0.0.1:" + strconv.Itoa(int(port))}})
	p := fs.connect(t)
	p.open("p1")
	host, tcp := "127.0.0.1", "tcp"
	p.send(wire.New(wire.ProtoPortForward, wire.TypeNew, "p1").With(wire.PropConnectionID, "c1").WithBody(wire.MustMarshal(wire.ForwardNew{RemoteHost: &host, RemotePort: &port, Protocol: &tcp})))
	if m := p.next("p1", nil); m.Header.MsgType != wire.TypeNew || m.StringProp(wire.PropConnectionID) != "c1" {
		t.Fatalf("new answered with %q: %s", m.Header.MsgType, errText(m))
	}
	payload := make([]byte, 100<<10)
	rand.Read(payload)
	var echoed bytes.Buffer
	sent, acks := 0, 0
	for echoed.Len() < len(payload) {
		if sent < len(payload) {
			end := min(sent+8<<10, len(payload))
			p.send(wire.New(wire.ProtoPortForward, wire.TypeForward, "p1").With(wire.PropConnectionID, "c1").WithBody(payload[sent:end]))
			sent = end
		}
		m := p.next("p1", nil)
		switch m.Header.MsgType {
		case wire.TypeAck:
			acks++
		case wire.TypeForward:
			echoed.Write(m.Body)
			p.send(wire.New(wire.ProtoPortForward, wire.TypeAck, "p1").With(wire.PropConnectionID, "c1"))
		default:
			t.Fatalf("forward: %q: %s", m.Header.MsgType, errText(m))
		}
	}
	if !bytes.Equal(echoed.Bytes(), payload) {
		t.Fatal("the echo differs from what was sent")
	}
	if acks == 0 {
		t.Error("the device acknowledged none of the forwarded messages")
	}
	p.send(wire.New(wire.ProtoPortForward, wire.TypeStop, "p1").With(wire.PropConnectionID, "c1"))
	p.next("p1", is(wire.ProtoPortForward, wire.TypeStop))

	other, udp := uint16(1), "udp"
	for _, tc := range []struct {
		host  string
		port  *uint16
		proto *string
		want  string
	}{
		{"127.0.0.1", &other, &tcp, "not allowed"},
		{"10.0.0.1", &port, &tcp, "not allowed"},
		{"127.0.0.1", &port, &udp, "only tcp"},
	} {
		h := tc.host
		p.send(wire.New(wire.ProtoPortForward, wire.TypeNew, "p1").With(wire.PropConnectionID, "c2").WithBody(wire.MustMarshal(wire.ForwardNew{RemoteHost: &h, RemotePort: tc.port, Protocol: tc.proto})))
		m := p.next("p1", nil)
		if m.Header.MsgType != wire.TypeError || !strings.Contains(errText(m), tc.want) {
			t.Errorf("new %s:%d/%s: %q %q, want an error saying %q", tc.host, *tc.port, *tc.proto, m.Header.MsgType, errText(m), tc.want)
		}
		if m := p.next("p1", nil); m.Header.MsgType != wire.TypeStop || m.StringProp(wire.PropConnectionID) != "c2" {
			t.Errorf("new %s:%d/%s refused, then %q for %q, want a stop of c2", tc.host, *tc.port, *tc.proto, m.Header.MsgType, m.StringProp(wire.PropConnectionID))
		}
	}
}

// TestLimits: sessions beyond MaxSessions are refused and close; an idle
// session ends with a stop and a close; a device with port forwarding off
// leaves it out of the accept and refuses it.
func TestLimits(t *testing.T) {
	fs := startServer(t)
	startClient(t, fs, Options{Terminal: true, FileTransfer: true, MaxSessions: 1, IdleTimeout: 500 * time.Millisecond})
	p := fs.connect(t)
	acc := p.open("a")
	for _, pr := range acc.Protocols {
		if pr == wire.ProtoPortForward {
			t.Errorf("accept offers port forwarding, which is off: %v", acc.Protocols)
		}
	}
	host, port, tcp := "127.0.0.1", uint16(22), "tcp"
	p.send(wire.New(wire.ProtoPortForward, wire.TypeNew, "a").With(wire.PropConnectionID, "x").WithBody(wire.MustMarshal(wire.ForwardNew{RemoteHost: &host, RemotePort: &port, Protocol: &tcp})))
	if m := p.next("a", nil); m.Header.MsgType != wire.TypeError || !strings.Contains(errText(m), "port forwarding is disabled") {
		t.Errorf("port forward with it off: %q %q", m.Header.MsgType, errText(m))
	}
	// A second session is refused while the first is open.
	p.send(wire.New(wire.ProtoShell, wire.TypeNew, "b"))
	m := p.next("b", nil)
	if st, _ := m.IntProp(wire.PropStatus); m.Header.MsgType != wire.TypeNew || st != wire.ShellError || !strings.Contains(string(m.Body), "MaxSessions") {
		t.Fatalf("second session answered with %q status %d %q", m.Header.MsgType, st, m.Body)
	}
	if m := p.next("b", nil); m.Header.Proto != wire.ProtoControl || m.Header.MsgType != wire.TypeError {
		t.Fatalf("the refusal's control error is %q", m.Header.MsgType)
	}
	// The first goes idle: a shell in it is stopped and it closes.
	p.send(wire.New(wire.ProtoShell, wire.TypeNew, "a"))
	p.next("a", is(wire.ProtoShell, wire.TypeNew))
	if m := p.next("a", is(wire.ProtoShell, wire.TypeStop)); !strings.Contains(string(m.Body), "idle") {
		t.Errorf("idle stop says %q", m.Body)
	}
	p.next("a", is(wire.ProtoControl, wire.TypeClose))
	// Then a new session is taken.
	p.open("c")
}

// TestReconnect: a refused token is dropped and the next attempt uses a
// fresh one; a dropped connection is dialled again.
func TestReconnect(t *testing.T) {
	fs := startServer(t)
	fs.accept.Store("token-2")
	_, toks := startClient(t, fs, allOn())
	p := fs.connect(t)
	if fs.refused.Load() == 0 {
		t.Fatal("the server refused no token")
	}
	toks.mu.Lock()
	inv := toks.invalidated
	toks.mu.Unlock()
	if inv == 0 {
		t.Fatal("the refused token was not invalidated")
	}
	// A shell in a session of the dropped connection ends with it.
	p.send(wire.New(wire.ProtoShell, wire.TypeNew, "x"))
	p.next("x", is(wire.ProtoShell, wire.TypeNew))
	p.send(wire.New(wire.ProtoShell, wire.TypeShell, "x").WithBody([]byte("echo pid-$$\n")))
	pidRE := regexp.MustCompile(`pid-([0-9]+)`)
	var out string
	for !pidRE.MatchString(out) {
		out += string(p.next("x", is(wire.ProtoShell, wire.TypeShell)).Body)
	}
	pid, _ := strconv.Atoi(pidRE.FindStringSubmatch(out)[1])
	p.ws.Close()
	p2 := fs.connect(t)
	for deadline := time.Now().Add(wait); syscall.Kill(pid, 0) == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the shell %d of the dropped connection still runs", pid)
		}
	}
	p2.open("y")
	// A message of a session the device does not know is refused.
	p2.send(wire.New(wire.ProtoShell, wire.TypeShell, "x").WithBody([]byte("echo stale\n")))
	if m := p2.next("x", is(wire.ProtoShell, wire.TypeShell)); !strings.Contains(string(m.Body), "no such session") {
		t.Errorf("input to an unknown session answered %q", m.Body)
	}
}

// TestKeepAlive: control pings outside a session are answered; a
// controller that stops answering (no message, no pong) is given up after
// three ping intervals and dialled again.
func TestKeepAlive(t *testing.T) {
	fs := startServer(t)
	fs.silent.Store(true)
	startClient(t, fs, Options{Terminal: true, PingInterval: 300 * time.Millisecond})
	for deadline := time.Now().Add(wait); fs.silentConns.Load() < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the device stayed on a controller that never answers (%d connections)", fs.silentConns.Load())
		}
	}
	fs.silent.Store(false)
	p := fs.connect(t)
	p.send(wire.New(wire.ProtoControl, wire.TypePing, ""))
	p.next("", is(wire.ProtoControl, wire.TypePong))
	p.send(wire.New(wire.ProtoControl, wire.TypePing, "k"))
	p.next("k", is(wire.ProtoControl, wire.TypePong))
	// The connection outlives several ping intervals while the server
	// answers pings (the peer's reader does).
	time.Sleep(1500 * time.Millisecond) // five intervals
	p.open("k2")
	select {
	case p2 := <-fs.conns:
		t.Fatalf("the device dialled again (%p) while the controller answered", p2)
	default:
	}
}

// TestShellUser: with User, the shell runs as that user (the test runs
// as root to switch).
func TestShellUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody here")
	}
	fs := startServer(t)
	startClient(t, fs, Options{Terminal: true, User: "nobody"})
	p := fs.connect(t)
	p.send(wire.New(wire.ProtoShell, wire.TypeNew, "u"))
	if m := p.next("u", is(wire.ProtoShell, wire.TypeNew)); !bytes.Equal(m.Body, []byte("Shell started")) {
		t.Fatalf("shell new: %q", m.Body)
	}
	p.send(wire.New(wire.ProtoShell, wire.TypeShell, "u").WithBody([]byte("echo uid-$(id -u)-$HOME\n")))
	p.shellOutput("u", "uid-"+u.Uid+"-"+u.HomeDir)
}

// TestOptions: what New refuses.
func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"relative shell", Options{ServerURL: "https://x", Shell: "sh"}, "not an absolute path"},
		{"bad allow", Options{ServerURL: "https://x", PortForwardAllow: []string{"localhost"}}, "not HOST:PORT"},
		{"bad port", Options{ServerURL: "https://x", PortForwardAllow: []string{"localhost:0"}}, "neither 1–65535 nor *"},
		{"scheme", Options{ServerURL: "ftp://x"}, "not http(s)"},
		{"too many sessions", Options{ServerURL: "https://x", MaxSessions: 1000}, "more than 64"},
		{"unknown user", Options{ServerURL: "https://x", User: "no-such-user-here"}, "no-such-user-here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Token = (&tokens{}).get
			_, err := New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestFileTransferAsUser: with User, file transfer has that user's
// rights: a file only root may read is refused, an upload into a
// directory only root may write is refused (and leaves nothing), and an
// upload the user may write belongs to them.
func TestFileTransferAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody here")
	}
	uid, _ := strconv.Atoi(u.Uid)
	base := t.TempDir()
	// The test's directories are root's 0700: open the way.
	for d := base; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	secret := filepath.Join(base, "secret")
	if err := os.WriteFile(secret, []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	rootDir := filepath.Join(base, "root-only")
	open := filepath.Join(base, "open")
	for _, d := range []string{rootDir, open} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(open, 0o777)

	fs := startServer(t)
	startClient(t, fs, Options{FileTransfer: true, User: "nobody"})
	p := fs.connect(t)
	p.open("n")
	p.send(wire.New(wire.ProtoFileTransfer, wire.TypeGetFile, "n").WithBody(wire.MustMarshal(wire.Path{Path: &secret})))
	if m := p.next("n", nil); m.Header.MsgType != wire.TypeError || !strings.Contains(errText(m), "permission denied") {
		t.Errorf("download of a root-only file as nobody: %q %q", m.Header.MsgType, errText(m))
	}
	put := func(dst string) *wire.Msg {
		p.send(wire.New(wire.ProtoFileTransfer, wire.TypePutFile, "n").WithBody(wire.MustMarshal(wire.UploadRequest{Path: &dst})))
		m := p.next("n", nil)
		if m.Header.MsgType != wire.TypeAck {
			return m
		}
		p.send(wire.New(wire.ProtoFileTransfer, wire.TypeChunk, "n").With(wire.PropOffset, int64(0)).WithBody([]byte("hello")))
		p.send(wire.New(wire.ProtoFileTransfer, wire.TypeChunk, "n").With(wire.PropOffset, int64(5)))
		for {
			m := p.next("n", nil)
			if off, _ := m.IntProp(wire.PropOffset); m.Header.MsgType != wire.TypeAck || off == 5 {
				return m
			}
		}
	}
	if m := put(filepath.Join(rootDir, "x")); m.Header.MsgType != wire.TypeError || !strings.Contains(errText(m), "permission denied") {
		t.Errorf("upload into a root-only directory as nobody: %q %q", m.Header.MsgType, errText(m))
	}
	if left, _ := os.ReadDir(rootDir); len(left) > 0 {
		t.Errorf("the refused upload left %v", left)
	}
	dst := filepath.Join(open, "x")
	if m := put(dst); m.Header.MsgType != wire.TypeAck {
		t.Fatalf("upload as nobody: %q %q", m.Header.MsgType, errText(m))
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
		t.Errorf("the upload belongs to uid %d, not nobody (%d)", st.Uid, uid)
	}
}
