package e2e

// An operator's websocket client speaking what mender-cli terminal speaks,
// for what mender-cli cannot show: a refusal past its own pre-check, and
// timings.

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/vmihailenco/msgpack/v5"
)

// remoteMsg is a message of Mender's deviceconnect protocol, as mender-cli
// sends and reads it (msgpack).
type remoteMsg struct {
	Header struct {
		Proto      int            `msgpack:"proto"`
		MsgType    string         `msgpack:"typ,omitempty"`
		SessionID  string         `msgpack:"sid,omitempty"`
		Properties map[string]any `msgpack:"props,omitempty"`
	} `msgpack:"hdr"`
	Body []byte `msgpack:"body,omitempty"`
}

// shellConn is a terminal, remote or local: what is typed goes in, what
// the terminal prints comes out.
type shellConn interface {
	Type(p []byte) error
	// Read returns the next output, waiting at most until deadline.
	Read(deadline time.Time) ([]byte, error)
	Close()
}

// wsShell is a shell on a device through the controller's operator
// websocket, speaking what mender-cli terminal speaks.
type wsShell struct {
	ws  *websocket.Conn
	sid string
	mu  sync.Mutex
	out chan []byte // shell output, closed when the connection ends
	err error       // why it ended
}

// dialShell opens a terminal to device through c as the operator with
// token, and waits until its shell answers; a shell that stays silent for
// 15 seconds (mender-connect 2.1 loses a new shell's output now and then,
// see openTerminal) is stopped and another opened, at most three times.
func dialShell(tb testing.TB, c *Controller, token, device string) *wsShell {
	tb.Helper()
	for try := 1; ; try++ {
		s := dialShellOnce(tb, c, token, device)
		if err := s.Type([]byte(fmt.Sprintf("echo ready-$((%d*2))\n", try))); err != nil {
			tb.Fatal(err)
		}
		if _, err := readUntilWithin(s, fmt.Sprintf("ready-%d", 2*try), 15*time.Second); err == nil {
			return s
		} else if try == 3 {
			tb.Fatalf("the shell on %s did not answer: %v", device, err)
		}
		tb.Logf("the shell on %s stayed silent for 15 s; opening another (try %d)", device, try+1)
		s.Close()
	}
}

func dialShellOnce(tb testing.TB, c *Controller, token, device string) *wsShell {
	tb.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CertPEM())
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 10 * time.Second}
	h := http.Header{"Authorization": {"Bearer " + token}}
	ws, resp, err := d.Dial("wss://"+c.Addr+"/api/management/v1/deviceconnect/devices/"+device+"/connect", h)
	if err != nil {
		status := ""
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			status = resp.Status + " " + string(b)
		}
		tb.Fatalf("operator websocket to %s: %v %s", device, err, status)
	}
	s := &wsShell{ws: ws}
	m := &remoteMsg{}
	m.Header.Proto, m.Header.MsgType = 1, "new"
	m.Header.Properties = map[string]any{"terminal_width": 200, "terminal_height": 50}
	if err := s.write(m); err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(Deadline)
	for s.sid == "" {
		ws.SetReadDeadline(deadline)
		r, err := s.next()
		if err != nil {
			tb.Fatalf("waiting for the shell: %v", err)
		}
		if r.Header.Proto == 1 && r.Header.MsgType == "new" {
			if st, ok := r.Header.Properties["status"]; ok && fmt.Sprint(st) == "2" {
				tb.Fatalf("the device refused the shell: %s", r.Body)
			}
			s.sid = r.Header.SessionID
		}
	}
	ws.SetReadDeadline(time.Time{})
	s.out = make(chan []byte, 64)
	go s.pump()
	return s
}

// pump reads the device's messages: shell output to out, pings answered.
// A gorilla websocket cannot be read again after a read deadline passed,
// so reads have none and Read waits on out instead.
func (s *wsShell) pump() {
	defer close(s.out)
	for {
		m, err := s.next()
		if err != nil {
			s.err = err
			return
		}
		switch {
		case m.Header.Proto == 1 && m.Header.MsgType == "shell":
			s.out <- m.Body
		case m.Header.Proto == 1 && m.Header.MsgType == "ping":
			pong := &remoteMsg{}
			pong.Header.Proto, pong.Header.MsgType, pong.Header.SessionID = 1, "pong", s.sid
			if err := s.write(pong); err != nil {
				s.err = err
				return
			}
		case m.Header.Proto == 1 && m.Header.MsgType == "stop":
			s.err = errors.New("the device stopped the shell")
			return
		}
	}
}

func (s *wsShell) write(m *remoteMsg) error {
	b, err := msgpack.Marshal(m)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ws.SetWriteDeadline(time.Now().Add(Deadline))
	return s.ws.WriteMessage(websocket.BinaryMessage, b)
}

func (s *wsShell) next() (*remoteMsg, error) {
	_, b, err := s.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	m := &remoteMsg{}
	return m, msgpack.Unmarshal(b, m)
}

func (s *wsShell) Type(p []byte) error {
	m := &remoteMsg{Body: p}
	m.Header.Proto, m.Header.MsgType, m.Header.SessionID = 1, "shell", s.sid
	return s.write(m)
}

func (s *wsShell) Read(deadline time.Time) ([]byte, error) {
	return readChan(s.out, deadline, func() error { return s.err })
}

// readChan returns the next chunk of out, or an error at deadline or when
// out is closed (then with why()).
func readChan(out <-chan []byte, deadline time.Time, why func() error) ([]byte, error) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case b, ok := <-out:
		if !ok {
			return nil, fmt.Errorf("the shell ended: %v", why())
		}
		return b, nil
	case <-t.C:
		return nil, errShellTimeout
	}
}

var errShellTimeout = errors.New("no output before the deadline")

func (s *wsShell) Close() {
	m := &remoteMsg{}
	m.Header.Proto, m.Header.MsgType, m.Header.SessionID = 1, "stop", s.sid
	s.write(m)
	s.ws.Close()
}

// tryShell opens the operator websocket to device with token and asks for
// a shell, as mender-cli does after its pre-check; it returns nil when the
// shell started (and stops it), else the refusal: the handshake's HTTP
// status, or the protocol's error.
func tryShell(c *Controller, token, device string) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.CertPEM())
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial("wss://"+c.Addr+"/api/management/v1/deviceconnect/devices/"+device+"/connect",
		http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			return fmt.Errorf("handshake: %s %s", resp.Status, b)
		}
		return err
	}
	defer ws.Close()
	s := &wsShell{ws: ws}
	m := &remoteMsg{}
	m.Header.Proto, m.Header.MsgType = 1, "new"
	m.Header.Properties = map[string]any{"terminal_width": 80, "terminal_height": 40}
	if err := s.write(m); err != nil {
		return err
	}
	ws.SetReadDeadline(time.Now().Add(Deadline))
	for {
		r, err := s.next()
		if err != nil {
			return fmt.Errorf("connection ended: %w", err)
		}
		switch {
		case r.Header.Proto == 1 && r.Header.MsgType == "new":
			if fmt.Sprint(r.Header.Properties["status"]) == "2" {
				return fmt.Errorf("shell refused: %s", r.Body)
			}
			stop := &remoteMsg{}
			stop.Header.Proto, stop.Header.MsgType, stop.Header.SessionID = 1, "stop", r.Header.SessionID
			s.write(stop)
			return nil
		case r.Header.Proto == 0xffff && r.Header.MsgType == "error":
			var e struct {
				Error string `msgpack:"err"`
			}
			msgpack.Unmarshal(r.Body, &e)
			return fmt.Errorf("control error: %s", e.Error)
		}
	}
}
