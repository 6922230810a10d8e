package remote

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/vmihailenco/msgpack/v5"
)

// Port forwarding, as mender-cli port-forward asks for it: a "new"
// connection to host:port over TCP (allowed by PortForwardAllow), data
// both ways in "forward" messages, each acknowledged, and "stop".
const (
	forwardWindow = 4 // forward messages to the operator not yet acknowledged
	dialTimeout   = 10 * time.Second
	forwardWrite  = 30 * time.Second
)

type forward struct {
	id      string
	conn    net.Conn
	credits chan struct{}
	once    sync.Once
	closing chan struct{}
	done    chan struct{}
}

// close closes the connection and waits for its reader.
func (f *forward) close() {
	f.once.Do(func() {
		close(f.closing)
		_ = f.conn.Close()
	})
	<-f.done
}

// pfFail answers m with a port forward error.
func (s *session) pfFail(m *wire.Msg, id string, err error) {
	msg, typ := err.Error(), m.Header.MsgType
	rsp := wire.New(wire.ProtoPortForward, wire.TypeError, "").WithBody(wire.MustMarshal(wire.TypedError{Error: &msg, MessageType: &typ}))
	if id != "" {
		rsp.With(wire.PropConnectionID, id)
	}
	_ = s.send(rsp)
}

func (s *session) forwardMsg(m *wire.Msg) {
	id := m.StringProp(wire.PropConnectionID)
	switch m.Header.MsgType {
	case wire.TypeNew:
		if err := s.newForward(m, id); err != nil {
			s.cn.c.log.Info("remote terminal: port forward refused", "session", s.id, "operator", s.user, "err", err)
			s.pfFail(m, id, err)
			if _, open := s.forwards[id]; id != "" && !open {
				// and the connection is over
				_ = s.send(wire.New(wire.ProtoPortForward, wire.TypeStop, "").With(wire.PropConnectionID, id))
			}
		}
	case wire.TypeForward:
		f, ok := s.forwards[id]
		if !ok {
			s.pfFail(m, id, errors.New("unknown connection"))
			return
		}
		_ = f.conn.SetWriteDeadline(time.Now().Add(forwardWrite))
		if _, err := f.conn.Write(m.Body); err != nil {
			s.pfFail(m, id, err)
			s.dropForward(f, true)
			return
		}
		_ = s.send(wire.New(wire.ProtoPortForward, wire.TypeAck, "").With(wire.PropConnectionID, id))
	case wire.TypeAck:
		if f, ok := s.forwards[id]; ok {
			select {
			case f.credits <- struct{}{}:
			default:
			}
		}
	case wire.TypeStop:
		f, ok := s.forwards[id]
		if !ok {
			return // it ended on this side already
		}
		s.dropForward(f, false)
		_ = s.send(wire.New(wire.ProtoPortForward, wire.TypeStop, "").With(wire.PropConnectionID, id))
	default:
		s.pfFail(m, id, fmt.Errorf("port forward message type %q not supported", m.Header.MsgType))
	}
}

// newForward connects to the requested host:port when it is allowed.
func (s *session) newForward(m *wire.Msg, id string) error {
	c := s.cn.c
	var req wire.ForwardNew
	if err := msgpack.Unmarshal(m.Body, &req); err != nil {
		return fmt.Errorf("malformed port forward request: %v", err)
	}
	if id == "" || req.RemoteHost == nil || *req.RemoteHost == "" || req.RemotePort == nil || *req.RemotePort == 0 || req.Protocol == nil {
		return errors.New("invalid port-forward message: missing connection_id, remote_port or protocol")
	}
	if len(id) > 256 {
		return errors.New("invalid port-forward message: connection_id longer than 256 bytes")
	}
	if *req.Protocol != "tcp" {
		return fmt.Errorf("protocol %q is not forwarded by this device (only tcp)", *req.Protocol)
	}
	if _, dup := s.forwards[id]; dup {
		return fmt.Errorf("connection %s is already open", id)
	}
	if len(s.forwards) >= maxForwards {
		return fmt.Errorf("the session has %d connections open, the device's limit", maxForwards)
	}
	addr := net.JoinHostPort(*req.RemoteHost, strconv.Itoa(int(*req.RemotePort)))
	if !c.allowed(*req.RemoteHost, *req.RemotePort) {
		return fmt.Errorf("port forward to %s is not allowed on this device (RemoteTerminal.PortForwardAllow)", addr)
	}
	conn, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return err
	}
	f := &forward{id: id, conn: conn, credits: make(chan struct{}, forwardWindow), closing: make(chan struct{}), done: make(chan struct{})}
	for range forwardWindow {
		f.credits <- struct{}{}
	}
	s.forwards[id] = f
	c.log.Info("remote terminal: port forward opened", "session", s.id, "operator", s.user, "connection", id, "to", addr)
	_ = s.send(wire.New(wire.ProtoPortForward, wire.TypeNew, "").With(wire.PropConnectionID, id))
	go s.readForward(f)
	return nil
}

// readForward sends what the connection reads, at most forwardWindow
// messages ahead of the operator's acknowledgements; when the connection
// ends on this side, the operator gets a stop.
func (s *session) readForward(f *forward) {
	defer close(f.done)
	buf := make([]byte, chunkSize)
	for {
		n, err := f.conn.Read(buf)
		if n > 0 {
			select {
			case <-f.credits:
			case <-f.closing:
				return
			case <-s.quit:
				return
			}
			s.touch()
			out := wire.New(wire.ProtoPortForward, wire.TypeForward, "").With(wire.PropConnectionID, f.id).WithBody(append([]byte(nil), buf[:n]...))
			if s.send(out) != nil {
				return
			}
		}
		if err != nil {
			break
		}
	}
	select {
	case <-f.closing:
		return // closed by the operator or the session
	default:
	}
	_ = s.send(wire.New(wire.ProtoPortForward, wire.TypeStop, "").With(wire.PropConnectionID, f.id))
	go s.post(func() {
		if s.forwards[f.id] == f {
			s.dropForward(f, false)
		}
	})
}

// dropForward closes f and forgets it; tell sends the operator a stop.
func (s *session) dropForward(f *forward, tell bool) {
	delete(s.forwards, f.id)
	f.close()
	if tell {
		_ = s.send(wire.New(wire.ProtoPortForward, wire.TypeStop, "").With(wire.PropConnectionID, f.id))
	}
}
