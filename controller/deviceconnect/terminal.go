package deviceconnect

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/gorilla/websocket"
)

// Connect serves GET /api/management/v1/deviceconnect/devices/{id}/connect:
// an operator's session websocket (mender-cli terminal and port-forward).
// Each message the operator sends is checked against the grant, stamped
// with the session's ID and the operator's name (user_id) and relayed to
// the device; the device's messages of this session come back.
func (r *Relay) Connect(w http.ResponseWriter, req *http.Request) {
	device, op, g, ok := r.authorize(w, req)
	if !ok {
		return
	}
	if !g.Terminal && !g.PortForward && !g.FileTransfer {
		msg := fmt.Sprintf("forbidden: operator %s may neither open a terminal, forward ports nor transfer files on device %s", op, device)
		writeError(w, http.StatusForbidden, msg)
		r.refused(op, device, g.Commit, msg)
		return
	}
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	c, connected, err := r.opts.Sessions.Connected(ctx, device)
	if err != nil {
		r.log.Error("device presence unavailable", "device_id", device, "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable; try again later")
		return
	}
	if !connected {
		writeError(w, http.StatusNotFound, "device "+device+" is not connected (is mender-connect running on it?)")
		return
	}
	s := r.newSession(KindTerminal, op, device, r.opts.Source(req), c.Conn, g)
	sub, err := r.opts.Sessions.Subscribe(ctx, sessionTopic(s.rec.ID))
	if err != nil {
		r.log.Error("deviceconnect: cannot subscribe to the session's topic", "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable; try again later")
		return
	}
	defer sub.Close()
	refused, err := s.start(ctx)
	if err != nil {
		r.log.Error("deviceconnect: cannot start a session", "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable; try again later")
		return
	}
	if refused != "" {
		r.refuse(w, req, refused)
		return
	}
	defer s.finish()
	ws, err := r.upgrader.Upgrade(w, req, nil)
	if err != nil {
		s.end("error: websocket upgrade failed", "")
		return
	}
	ws.SetReadLimit(maxFrame)
	r.log.Info("remote session opened", "session", s.rec.ID, "operator", op, "device_id", device, "source", s.rec.Source)
	t := &terminal{s: s, ws: ws, out: make(chan []byte, 16)}
	t.run(ctx, sub)
}

// refuse answers an operator whose session a limit refuses: a websocket
// client (mender-cli) is upgraded and told in the protocol, since it would
// show only "bad handshake" for an HTTP error; any other client gets 429.
func (r *Relay) refuse(w http.ResponseWriter, req *http.Request, msg string) {
	if !websocket.IsWebSocketUpgrade(req) {
		writeError(w, http.StatusTooManyRequests, msg)
		return
	}
	ws, err := r.upgrader.Upgrade(w, req, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(maxFrame)
	// The operator speaks first: a shell's "new" or a control "open".
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var first *wire.Msg
	if _, b, err := ws.ReadMessage(); err == nil {
		first, _ = wire.Decode(b)
	}
	if first == nil {
		first = &wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeOpen}}
	}
	for _, b := range refusal(first, msg, true) {
		_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_ = ws.WriteMessage(websocket.BinaryMessage, b)
	}
	closeWS(ws, websocket.ClosePolicyViolation, msg)
}

// refusal is what the operator is told when m is refused: a shell
// message is answered in the shell protocol (mender-cli shows "Unable to
// start the shell: …"), a port forward's new connection is stopped, a file
// transfer gets its protocol's error; and every refusal gets a control
// error, which closes the session when final.
func refusal(m *wire.Msg, msg string, final bool) [][]byte {
	var out [][]byte
	sid := m.Header.SessionID
	switch m.Header.Proto {
	case wire.ProtoShell:
		typ := m.Header.MsgType
		if typ == "" || typ == wire.TypePing || typ == wire.TypePong {
			typ = wire.TypeShell
		}
		rsp := &wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: typ, SessionID: sid}, Body: []byte(msg)}
		rsp.SetProp(wire.PropStatus, wire.ShellError)
		out = append(out, rsp.Encode())
	case wire.ProtoFileTransfer:
		rsp := &wire.Msg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.TypeError, SessionID: sid}}
		typ := m.Header.MsgType
		rsp.Body = wire.MustMarshal(wire.TypedError{Error: &msg, MessageType: &typ})
		out = append(out, rsp.Encode())
	case wire.ProtoPortForward:
		rsp := &wire.Msg{Header: wire.Header{Proto: wire.ProtoPortForward, MsgType: wire.TypeError, SessionID: sid},
			Body: wire.MustMarshal(wire.ControlError{Error: msg, MessageProto: wire.ProtoPortForward, MessageType: m.Header.MsgType})}
		out = append(out, rsp.Encode())
		var cid string
		if m.Prop(wire.PropConnectionID, &cid) && cid != "" {
			stop := &wire.Msg{Header: wire.Header{Proto: wire.ProtoPortForward, MsgType: wire.TypeStop, SessionID: sid}}
			stop.SetProp(wire.PropConnectionID, cid)
			out = append(out, stop.Encode())
		}
	}
	ctl := &wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeError, SessionID: sid},
		Body: wire.MustMarshal(wire.ControlError{Error: msg, Close: final, MessageProto: m.Header.Proto, MessageType: m.Header.MsgType})}
	return append(out, ctl.Encode())
}

// terminal is an operator's session websocket.
type terminal struct {
	s   *session
	ws  *websocket.Conn
	out chan []byte // to the operator, from the reader (refusals)

	mu        sync.Mutex
	shellOpen bool
}

func (t *terminal) run(ctx context.Context, sub store.Subscription) {
	s, r := t.s, t.s.r
	ping := r.opts.PingInterval
	alive := func() { _ = t.ws.SetReadDeadline(time.Now().Add(3 * ping)) }
	alive()
	t.ws.SetPongHandler(func(string) error { alive(); return nil })
	t.ws.SetPingHandler(func(msg string) error {
		alive()
		return t.ws.WriteControl(websocket.PongMessage, []byte(msg), time.Now().Add(ping))
	})
	// The reader's waits end with the session.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-sctx.Done():
		}
	}()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t.read(sctx)
	}()
	t.write(ctx, sub)
	wg.Wait()
}

// read relays the operator's messages to the device until the operator
// leaves or the session ends.
func (t *terminal) read(ctx context.Context) {
	s, r := t.s, t.s.r
	topic := deviceTopic(s.rec.Device)
	refusedOnce := map[uint16]bool{}
	usedAny := false // a message other than control was relayed
	for {
		_, b, err := t.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) && (ce.Code == websocket.CloseNormalClosure || ce.Code == websocket.CloseGoingAway) {
				s.end(ReasonClosed, "the operator closed the session")
			} else {
				s.end(ReasonClosed, "the operator's connection closed")
			}
			return
		}
		_ = t.ws.SetReadDeadline(time.Now().Add(3 * r.opts.PingInterval))
		m, err := wire.Decode(b)
		if err != nil {
			t.send(refusal(&wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, SessionID: s.rec.ID}}, "malformed message: "+err.Error(), false)...)
			continue
		}
		g := s.currentGrant()
		if ok, what := g.allowed(m.Header.Proto); !ok {
			m.Header.SessionID = s.rec.ID
			msg := fmt.Sprintf("forbidden: operator %s may not use %s on device %s", s.rec.Operator, what, s.rec.Device)
			if !refusedOnce[m.Header.Proto] { // one event per protocol and session
				refusedOnce[m.Header.Proto] = true
				r.refused(s.rec.Operator, s.rec.Device, g.Commit, msg+" (session "+s.rec.ID+")")
			}
			if !usedAny {
				// The session was opened for what is refused
				// (mender-cli port-forward without portForward):
				// it ends, and the operator's program with it.
				t.send(refusal(m, msg, true)...)
				s.end(ReasonRefused, msg)
				return
			}
			t.send(refusal(m, msg, false)...)
			continue
		}
		if m.Header.Proto != wire.ProtoControl {
			usedAny = true
		}
		m.Header.SessionID = s.rec.ID
		m.SetProp(wire.PropUserID, s.rec.Operator)
		if m.Header.Proto == wire.ProtoShell {
			t.mu.Lock()
			switch m.Header.MsgType {
			case wire.TypeNew:
				t.shellOpen = true
			case wire.TypeStop:
				t.shellOpen = false
			}
			t.mu.Unlock()
		}
		var input []byte
		if m.Header.Proto == wire.ProtoShell && m.Header.MsgType == wire.TypeShell {
			input = m.Body
		}
		frame := m.Encode()
		if len(frame) > deviceMaxFrame {
			t.send(refusal(m, fmt.Sprintf("message of %d bytes refused: the device reads messages of at most %d bytes", len(frame), deviceMaxFrame), false)...)
			continue
		}
		s.mu.Lock()
		lim := s.toDevice
		s.mu.Unlock()
		if err := waitBytes(ctx, lim, len(frame)); err != nil {
			return
		}
		e := envelope{Kind: envFrame, Device: s.rec.Device, Conn: s.conn, Rate: g.BytesPerSecond, Msg: frame}
		if err := r.opts.Sessions.Publish(ctx, topic, e.marshal()); err != nil {
			if ctx.Err() == nil {
				s.end("error: cannot relay to the device: "+err.Error(), "the relay failed; try again")
			}
			return
		}
		s.used(m.Header.Proto)
		s.count(len(frame), 0, input, !m.KeepAlive())
	}
}

// send queues messages for the operator.
func (t *terminal) send(msgs ...[]byte) {
	for _, b := range msgs {
		select {
		case t.out <- b:
		case <-t.s.done:
			return
		}
	}
}

// write relays the device's messages to the operator, keeps the session's
// record and the connection alive, and tears the session down when it
// ends.
func (t *terminal) write(ctx context.Context, sub store.Subscription) {
	s, r := t.s, t.s.r
	wr := func(b []byte) error {
		_ = t.ws.SetWriteDeadline(time.Now().Add(r.opts.PingInterval))
		return t.ws.WriteMessage(websocket.BinaryMessage, b)
	}
	tick := time.NewTicker(s.tickEvery())
	defer tick.Stop()
	pinger := time.NewTicker(r.opts.PingInterval)
	defer pinger.Stop()
	ping := func() {
		if t.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(r.opts.PingInterval)) != nil {
			s.end(ReasonClosed, "the operator's connection closed")
		}
	}
	// next: a bus message relay took but did not merge, relayed next
	// (after a look at the other duties, so that a long burst of output
	// does not hold up the lease and the pings).
	var (
		next    []byte
		nextOK  bool
		hasNext bool
	)
loop:
	for {
		if hasNext {
			select {
			case <-s.done:
				break loop
			case <-tick.C:
				s.tick(ctx)
			case <-pinger.C:
				ping()
			default:
			}
			hasNext = false
			next, nextOK, hasNext = t.relay(next, nextOK, sub, wr)
			continue
		}
		select {
		case <-s.done:
			break loop
		case b := <-t.out:
			if wr(b) != nil {
				s.end(ReasonClosed, "the operator's connection closed")
			}
		case b, ok := <-sub.C():
			next, nextOK, hasNext = t.relay(b, ok, sub, wr)
		case <-tick.C:
			s.tick(ctx)
		case <-pinger.C:
			ping()
		}
	}
	t.teardown(ctx, wr)
}

// relay writes one bus message b (ok false: the subscription ended) to
// the operator. Shell output is merged with the shell output of the
// session that the subscription already holds (up to mergeLimit bytes),
// so a burst of output takes few websocket messages; the first message
// that cannot be merged is returned, with more true, to be relayed next.
func (t *terminal) relay(b []byte, ok bool, sub store.Subscription, wr func([]byte) error) (next []byte, nextOK, more bool) {
	s := t.s
	if !ok {
		s.end("error: the relay's subscription ended", "the relay lost the session; try again")
		return nil, false, false
	}
	m, raw := t.frame(b)
	if m == nil {
		return nil, false, false
	}
	if m.Header.Proto == wire.ProtoShell && m.Header.MsgType == wire.TypeStop {
		t.mu.Lock()
		t.shellOpen = false
		t.mu.Unlock()
	}
	counted := len(raw)
	merged := false
	if isShellOutput(m) && len(m.Body) < mergeLimit {
		var body []byte
	merge:
		for len(m.Body)+len(body) < mergeLimit {
			select {
			case nb, nok := <-sub.C():
				if !nok {
					next, nextOK, more = nil, false, true
					break merge
				}
				m2, raw2 := t.frame(nb)
				switch {
				case m2 == nil:
					// Not for this session's operator (relay would
					// skip it too).
				case !mergeable(m, m2) || len(m.Body)+len(body)+len(m2.Body) > mergeLimit:
					next, nextOK, more = nb, true, true
					break merge
				default:
					body = append(body, m2.Body...)
					counted += len(raw2)
				}
			default:
				break merge
			}
		}
		if body != nil {
			m.Body = append(m.Body, body...)
			merged = true
		}
	}
	// The device's frame as it came, unless merged or its integers
	// widened for mender-cli.
	frame := raw
	if (m.Header.Proto == wire.ProtoShell && widenInts(m, wire.PropStatus, "timeout")) || merged {
		frame = m.Encode()
	}
	if wr(frame) != nil {
		s.end(ReasonClosed, "the operator's connection closed")
		return nil, false, false
	}
	s.count(0, counted, nil, !m.KeepAlive())
	return next, nextOK, more
}

// frame decodes a bus message of the session: the device's frame, decoded
// and as the device sent it; nil when it is none (another device's, a
// malformed one) or the device's connection closed (the session ends).
func (t *terminal) frame(b []byte) (*wire.Msg, []byte) {
	s := t.s
	e, err := decodeEnvelope(b)
	if err != nil || e.Device != s.rec.Device {
		return nil, nil
	}
	if e.Kind == envGone {
		s.end(ReasonDeviceDisconnected, "the device disconnected")
		return nil, nil
	}
	m, err := wire.Decode(e.Msg)
	if err != nil || m.Header.SessionID != s.rec.ID {
		return nil, nil
	}
	return m, e.Msg
}

// teardown stops the session on both sides: the device is told to stop
// the shell and close the session; the operator, unless they left, is
// told why, in the shell protocol (which ends mender-cli terminal) and in
// the websocket's close frame.
func (t *terminal) teardown(ctx context.Context, wr func([]byte) error) {
	s, r := t.s, t.s.r
	reason, msg := s.ended()
	for drained := false; !drained; { // what the reader queued goes first
		select {
		case b := <-t.out:
			_ = wr(b)
		default:
			drained = true
		}
	}
	t.mu.Lock()
	shellOpen := t.shellOpen
	t.mu.Unlock()
	bg, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	var toDevice [][]byte
	if shellOpen {
		stop := &wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeStop, SessionID: s.rec.ID}, Body: []byte(msg)}
		stop.SetProp(wire.PropStatus, wire.ShellError)
		stop.SetProp(wire.PropUserID, s.rec.Operator)
		toDevice = append(toDevice, stop.Encode())
	}
	closeMsg := &wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeClose, SessionID: s.rec.ID}}
	closeMsg.SetProp(wire.PropUserID, s.rec.Operator)
	toDevice = append(toDevice, closeMsg.Encode())
	if reason != ReasonDeviceDisconnected {
		for _, b := range toDevice {
			e := envelope{Kind: envFrame, Device: s.rec.Device, Conn: s.conn, Msg: b}
			_ = r.opts.Sessions.Publish(bg, deviceTopic(s.rec.Device), e.marshal())
		}
	}
	if reason != ReasonClosed {
		stop := &wire.Msg{Header: wire.Header{Proto: wire.ProtoShell, MsgType: wire.TypeStop, SessionID: s.rec.ID}, Body: []byte(msg)}
		stop.SetProp(wire.PropStatus, wire.ShellError)
		_ = wr(stop.Encode())
		ctl := &wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeClose, SessionID: s.rec.ID}, Body: []byte(msg)}
		_ = wr(ctl.Encode())
		code := websocket.ClosePolicyViolation
		switch reason {
		case ReasonDeviceDisconnected, ReasonShutdown:
			code = websocket.CloseGoingAway
		case ReasonIdle:
			code = websocket.CloseNormalClosure
		}
		if len(reason) > 6 && reason[:6] == "error:" {
			code = websocket.CloseInternalServerErr
		}
		closeWS(t.ws, code, msg)
		return
	}
	closeWS(t.ws, websocket.CloseNormalClosure, "")
}
