package remote

import (
	"fmt"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/vmihailenco/msgpack/v5"
)

// session is one deviceconnect session: its messages are handled in
// order by one goroutine (run); the shell's output, a download and the
// port forward connections send from their own goroutines.
type session struct {
	cn   *conn
	id   string
	user string // the operator, as the relay names them
	in   chan *wire.Msg
	quit chan struct{} // closed by end
	done chan struct{} // closed when run has cleaned up

	endOnce sync.Once
	why     string
	tell    bool // tell the operator why it ended

	activity chan struct{} // traffic: resets the idle timer
	events   chan func()   // run by run: state changes from other goroutines

	// Owned by run.
	shell    *shell
	transfer *transfer
	forwards map[string]*forward
}

func (cn *conn) newSession(id, user string) *session {
	s := &session{
		cn: cn, id: id, user: user,
		in:       make(chan *wire.Msg, queueLen),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		activity: make(chan struct{}, 1),
		events:   make(chan func(), 8),
		forwards: map[string]*forward{},
	}
	cn.c.log.Info("remote terminal: session opened", "session", id, "operator", user)
	go s.run()
	return s
}

// deliver queues m for the session; a session that does not take it in
// time is ended.
func (s *session) deliver(m *wire.Msg) {
	select {
	case s.in <- m:
		return
	case <-s.quit:
		return
	default:
	}
	t := time.NewTimer(queueWait)
	defer t.Stop()
	select {
	case s.in <- m:
	case <-s.quit:
	case <-t.C:
		s.end("the session did not keep up with its messages", true)
	}
}

// touch notes traffic.
func (s *session) touch() {
	select {
	case s.activity <- struct{}{}:
	default:
	}
}

// end ends the session (once): why is logged and, when tell is set, sent
// to the operator.
func (s *session) end(why string, tell bool) {
	s.endOnce.Do(func() {
		s.why, s.tell = why, tell
		close(s.quit)
	})
}

// post runs f in the session's goroutine, unless the session ends first.
// Call it from a goroutine of its own where the caller's end is waited
// for by the session (go s.post(…)).
func (s *session) post(f func()) {
	select {
	case s.events <- f:
	case <-s.quit:
	}
}

// send writes m, stamped with the session.
func (s *session) send(m *wire.Msg) error {
	m.Header.SessionID = s.id
	return s.cn.send(m)
}

func (s *session) run() {
	defer close(s.done)
	idle := s.cn.c.opts.IdleTimeout
	timer := time.NewTimer(idle)
	defer timer.Stop()
loop:
	for {
		select {
		case <-s.quit:
			break loop
		case <-s.activity:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(idle)
		case <-timer.C:
			s.end(fmt.Sprintf("the session was idle for %s (RemoteTerminal.IdleTimeoutSeconds on the device)", idle), true)
		case f := <-s.events:
			f()
		case m := <-s.in:
			if !m.KeepAlive() {
				s.touch()
			}
			s.handle(m)
		}
	}
	s.cleanup()
}

// handle serves one message.
func (s *session) handle(m *wire.Msg) {
	c := s.cn.c
	switch m.Header.Proto {
	case wire.ProtoControl:
		s.control(m)
	case wire.ProtoShell:
		if !c.opts.Terminal {
			s.cn.refuseOne(m, "the terminal is disabled on the device (RemoteTerminal.Terminal)")
			return
		}
		s.shellMsg(m)
	case wire.ProtoFileTransfer:
		if !c.opts.FileTransfer {
			s.cn.refuseOne(m, "file transfer is disabled on the device (RemoteTerminal.FileTransfer)")
			return
		}
		s.fileMsg(m)
	case wire.ProtoPortForward:
		if !c.opts.PortForward {
			s.cn.refuseOne(m, "port forwarding is disabled on the device (RemoteTerminal.PortForward)")
			return
		}
		s.forwardMsg(m)
	default:
		_ = s.send(wire.New(wire.ProtoControl, wire.TypeError, "").WithBody(wire.MustMarshal(wire.ControlError{
			Error: fmt.Sprintf("the device does not implement protocol 0x%04X", m.Header.Proto), MessageProto: m.Header.Proto, MessageType: m.Header.MsgType})))
	}
}

// refuseOne answers m with an error in its protocol without closing the
// session.
func (cn *conn) refuseOne(m *wire.Msg, why string) {
	sid, typ := m.Header.SessionID, m.Header.MsgType
	switch m.Header.Proto {
	case wire.ProtoShell:
		_ = cn.send(wire.New(wire.ProtoShell, typ, sid).With(wire.PropStatus, wire.ShellError).WithBody([]byte(why)))
	case wire.ProtoFileTransfer, wire.ProtoPortForward:
		rsp := wire.New(m.Header.Proto, wire.TypeError, sid).WithBody(wire.MustMarshal(wire.TypedError{Error: &why, MessageType: &typ}))
		if id := m.StringProp(wire.PropConnectionID); id != "" {
			rsp.With(wire.PropConnectionID, id)
		}
		_ = cn.send(rsp)
	}
}

func (s *session) control(m *wire.Msg) {
	switch m.Header.MsgType {
	case wire.TypePing:
		_ = s.send(wire.New(wire.ProtoControl, wire.TypePong, ""))
	case wire.TypePong:
	case wire.TypeOpen:
		var req wire.Open
		if err := msgpack.Unmarshal(m.Body, &req); err != nil {
			s.controlError(m, "malformed open: "+err.Error(), true)
			return
		}
		for _, v := range req.Versions {
			if v == wire.ProtocolVersion {
				_ = s.send(wire.New(wire.ProtoControl, wire.TypeAccept, "").WithBody(wire.MustMarshal(wire.Accept{Version: wire.ProtocolVersion, Protocols: s.cn.c.protocols()})))
				return
			}
		}
		s.controlError(m, fmt.Sprintf("handshake rejected: the device speaks protocol version %d", wire.ProtocolVersion), true)
	case wire.TypeAccept:
	case wire.TypeClose:
		s.end("closed by the operator's side", false)
	case wire.TypeError:
		var e wire.ControlError
		_ = msgpack.Unmarshal(m.Body, &e)
		s.cn.c.log.Info("remote terminal: error from the operator's side", "session", s.id, "err", e.Error)
		if e.Close {
			s.end("closed by the operator's side after an error: "+e.Error, false)
		}
	default:
		s.controlError(m, fmt.Sprintf("control message %q not understood", m.Header.MsgType), false)
	}
}

func (s *session) controlError(m *wire.Msg, why string, closing bool) {
	_ = s.send(wire.New(wire.ProtoControl, wire.TypeError, "").WithBody(wire.MustMarshal(wire.ControlError{
		Error: why, Close: closing, MessageProto: m.Header.Proto, MessageType: m.Header.MsgType})))
	if closing {
		s.end(why, false)
	}
}

// cleanup stops what the session runs and forgets it.
func (s *session) cleanup() {
	s.cn.remove(s)
	if s.tell {
		if s.shell != nil {
			_ = s.send(wire.New(wire.ProtoShell, wire.TypeStop, "").With(wire.PropStatus, wire.ShellError).WithBody([]byte(s.why)))
		}
		_ = s.send(wire.New(wire.ProtoControl, wire.TypeError, "").WithBody(wire.MustMarshal(wire.ControlError{Error: s.why, Close: true})))
		_ = s.send(wire.New(wire.ProtoControl, wire.TypeClose, ""))
	}
	if s.shell != nil {
		s.shell.stop()
		s.shell = nil
	}
	if s.transfer != nil {
		s.transfer.abort()
		s.transfer = nil
	}
	for id, f := range s.forwards {
		f.close()
		delete(s.forwards, id)
	}
	s.cn.c.log.Info("remote terminal: session ended", "session", s.id, "operator", s.user, "reason", s.why)
}
