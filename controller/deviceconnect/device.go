package deviceconnect

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

// deviceMaxFrame is the largest message mender-connect reads (its
// websocket's read limit); a larger one closes its connection, and every
// session on it.
const deviceMaxFrame = 8192

// maxDeviceSessions bounds the sessions one device connection remembers
// (to tell their operators when it closes, and to slow the device down in
// each); beyond it, an operator's replica learns of the close from the
// device's presence record instead.
const maxDeviceSessions = 1024

// ServeDevice serves GET /api/devices/v1/deviceconnect/connect for device
// (authenticated by the caller): the websocket mender-connect keeps open.
// While it is open the device is "connected": the store's presence record
// names this connection, and frames published to the device's topic are
// written to it.
func (r *Relay) ServeDevice(w http.ResponseWriter, req *http.Request, device string) {
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	connID := r.opts.Replica + "/" + newID()
	// Subscribe before the device can be seen as connected, so that no
	// frame for it is lost.
	sub, err := r.opts.Sessions.Subscribe(ctx, deviceTopic(device))
	if err != nil {
		r.log.Error("deviceconnect: cannot subscribe to the device's topic", "device_id", device, "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable; try again later")
		return
	}
	defer sub.Close()
	ws, err := r.upgrader.Upgrade(w, req, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer ws.Close()
	ws.SetReadLimit(maxFrame)
	if err := r.opts.Sessions.SetConnected(ctx, device, connID, r.opts.PresenceTTL); err != nil {
		r.log.Error("deviceconnect: cannot record the device's connection", "device_id", device, "err", err)
		closeWS(ws, websocket.CloseTryAgainLater, "store unavailable; try again later")
		return
	}
	r.log.Info("device connected for remote sessions", "device_id", device, "conn", connID)
	d := &deviceConn{r: r, device: device, conn: connID, ws: ws, sessions: map[string]*rate.Limiter{}}
	reason := d.run(ctx, cancel, sub)
	// The connection closed: clear the presence record (unless a newer
	// connection replaced it) and tell the operators of its sessions.
	bg, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	if err := r.opts.Sessions.SetConnected(bg, device, connID, 0); err != nil {
		r.log.Warn("deviceconnect: cannot clear the device's connection record", "device_id", device, "err", err)
	}
	d.mu.Lock()
	sids := make([]string, 0, len(d.sessions))
	for sid := range d.sessions {
		sids = append(sids, sid)
	}
	d.mu.Unlock()
	gone := (&envelope{Kind: envGone, Device: device, Conn: connID, Reason: reason}).marshal()
	for _, sid := range sids {
		_ = r.opts.Sessions.Publish(bg, sessionTopic(sid), gone)
	}
	r.log.Info("device disconnected from remote sessions", "device_id", device, "conn", connID, "reason", reason)
}

// deviceConn is one device's websocket.
type deviceConn struct {
	r      *Relay
	device string
	conn   string
	ws     *websocket.Conn
	wmu    sync.Mutex // one writer at a time

	mu       sync.Mutex
	sessions map[string]*rate.Limiter // open sessions: the cap on what the device sends in each
}

func (d *deviceConn) write(b []byte) error {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	_ = d.ws.SetWriteDeadline(time.Now().Add(d.r.opts.PingInterval))
	return d.ws.WriteMessage(websocket.BinaryMessage, b)
}

// run relays until the device or the relay ends the connection; it
// returns why.
func (d *deviceConn) run(ctx context.Context, cancel context.CancelFunc, sub interface{ C() <-chan []byte }) string {
	var (
		once   sync.Once
		reason string
		code   = websocket.CloseGoingAway
	)
	// stop ends the connection; the device is told why in the close
	// frame (code, why).
	stop := func(why string) {
		once.Do(func() { reason = why; cancel() })
	}
	stopWith := func(c int, why string) {
		once.Do(func() { reason, code = why, c; cancel() })
	}
	ping := d.r.opts.PingInterval
	alive := func() { _ = d.ws.SetReadDeadline(time.Now().Add(3 * ping)) }
	alive()
	d.ws.SetPongHandler(func(string) error { alive(); return nil })
	d.ws.SetPingHandler(func(msg string) error {
		alive()
		d.wmu.Lock()
		defer d.wmu.Unlock()
		return d.ws.WriteControl(websocket.PongMessage, []byte(msg), time.Now().Add(ping))
	})

	var wg sync.WaitGroup
	wg.Add(2)
	// Operators' frames to the device.
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case b, ok := <-sub.C():
				if !ok {
					stopWith(websocket.CloseTryAgainLater, "the relay's subscription ended; connect again")
					return
				}
				e, err := decodeEnvelope(b)
				if err != nil || e.Kind != envFrame || e.Device != d.device || (e.Conn != "" && e.Conn != d.conn) {
					continue
				}
				m, err := wire.Decode(e.Msg)
				if err != nil {
					continue
				}
				d.note(m, e.Rate, false)
				if err := d.write(e.Msg); err != nil {
					stop("write to the device failed")
					return
				}
			}
		}
	}()
	// Presence and keep-alive.
	go func() {
		defer wg.Done()
		renew := time.NewTicker(d.r.opts.PresenceTTL / 3)
		defer renew.Stop()
		pinger := time.NewTicker(ping)
		defer pinger.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-pinger.C:
				d.wmu.Lock()
				err := d.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(ping))
				d.wmu.Unlock()
				if err != nil {
					stop("the device stopped answering")
					return
				}
			case <-renew.C:
				c, ok, err := d.r.opts.Sessions.Connected(ctx, d.device)
				if err == nil && ok && c.Conn != d.conn {
					stopWith(websocket.CloseGoingAway, "a newer connection of this device replaced this one")
					return
				}
				if err := d.r.opts.Sessions.SetConnected(ctx, d.device, d.conn, d.r.opts.PresenceTTL); err != nil && ctx.Err() == nil {
					d.r.log.Warn("deviceconnect: cannot renew the device's connection record", "device_id", d.device, "err", err)
				}
			}
		}
	}()
	// The device's frames to their sessions: a reader that applies each
	// session's cap and hands the frames on through a bounded channel
	// (when it is full the reader waits, and the device's TCP connection
	// slows the device down), and this goroutine publishing them, merged
	// where they are shell output that is already waiting (see merger).
	go func() {
		<-ctx.Done()
		closeWS(d.ws, code, reason) // ends the read below
	}()
	frames := make(chan deviceFrame, deviceQueue)
	go func() {
		defer close(frames)
		for {
			_, b, err := d.ws.ReadMessage()
			if err != nil {
				stop("the device closed the connection")
				return
			}
			alive()
			m, err := wire.Decode(b)
			if err != nil {
				d.r.log.Info("deviceconnect: malformed message from the device", "device_id", d.device, "err", err)
				continue
			}
			if m.Header.SessionID == "" {
				continue // not part of a session: nobody to give it to
			}
			lim := d.note(m, 0, true)
			if err := waitBytes(ctx, lim, len(b)); err != nil {
				return
			}
			select {
			case frames <- deviceFrame{m: m, raw: b}:
			case <-ctx.Done():
				return
			}
		}
	}()
	mg := merger{in: frames, max: mergeLimit}
	for {
		f, ok := mg.next()
		if !ok {
			break
		}
		e := envelope{Kind: envFrame, Device: d.device, Conn: d.conn, Msg: f.raw}
		if err := d.r.opts.Sessions.Publish(ctx, sessionTopic(f.m.Header.SessionID), e.marshal()); err != nil && ctx.Err() == nil {
			d.r.log.Warn("deviceconnect: cannot relay the device's message", "device_id", d.device, "err", err)
		}
	}
	wg.Wait()
	return reason
}

// note keeps track of the device's sessions: one starts with any frame
// and ends with a control close (either way) or the shell's stop from
// the device. It returns the session's rate limiter.
func (d *deviceConn) note(m *wire.Msg, bps int64, fromDevice bool) *rate.Limiter {
	sid := m.Header.SessionID
	d.mu.Lock()
	defer d.mu.Unlock()
	closing := (m.Header.Proto == wire.ProtoControl && m.Header.MsgType == wire.TypeClose) ||
		(fromDevice && m.Header.Proto == wire.ProtoShell && m.Header.MsgType == wire.TypeStop)
	lim, known := d.sessions[sid]
	if closing {
		delete(d.sessions, sid)
		return lim
	}
	if fromDevice {
		return lim
	}
	changed := (lim == nil) != (bps <= 0) || (lim != nil && int64(lim.Limit()) != bps)
	if (!known && len(d.sessions) < maxDeviceSessions) || (known && changed) {
		lim = nil
		if bps > 0 {
			lim = limiter(bps)
		}
		d.sessions[sid] = lim
	}
	return lim
}

// closeWS sends a close frame with a reason (at most 123 bytes) and
// closes the connection.
func closeWS(ws *websocket.Conn, code int, reason string) {
	if len(reason) > 123 {
		reason = reason[:120] + "..."
	}
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
	_ = ws.Close()
}
