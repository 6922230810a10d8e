package deviceconnect

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/vmihailenco/msgpack/v5"
)

// File transfer with the device, run by the relay for mender-cli cp: the
// protocol is mender-connect's (a control open, then stat and get_file, or
// put_file, and chunks acknowledged in a sliding window).
const (
	// Bytes per file_chunk sent to the device: mender-connect reads
	// messages of at most deviceMaxFrame bytes (header included), and
	// the Mender server sends 4 KiB.
	chunkSize = 4 << 10
	// The device acknowledges at least every 10 chunks it receives; at
	// most ackWindow chunks are in flight.
	ackWindow = 20
	// A download acknowledges every ackEvery chunks (mender-connect sends
	// 20 ahead before waiting).
	ackEvery = 10
)

// Headers of a download, which mender-cli reads.
const (
	hdrPath = "X-MEN-File-Path"
	hdrUID  = "X-MEN-File-UID"
	hdrGID  = "X-MEN-File-GID"
	hdrMode = "X-MEN-File-Mode"
	hdrSize = "X-MEN-File-Size"
)

// httpErr is a failure with the status the operator gets.
type httpErr struct {
	status int
	msg    string
}

func (e *httpErr) Error() string { return e.msg }

func failf(status int, format string, args ...any) error {
	return &httpErr{status, fmt.Sprintf(format, args...)}
}

// transfer is one download or upload session with the device.
type transfer struct {
	s   *session
	sub store.Subscription
	// ctx is the operator's request: a transfer lasts as long as it.
	ctx   context.Context
	wrote bool // the response's status is sent
}

// authorizeTransfer checks the operator, the grant and the device; on
// failure it has answered.
func (r *Relay) authorizeTransfer(w http.ResponseWriter, req *http.Request, kind string) (*session, bool) {
	device, op, g, ok := r.authorize(w, req)
	if !ok {
		return nil, false
	}
	if !g.FileTransfer {
		msg := fmt.Sprintf("forbidden: operator %s may not transfer files on device %s (the Operator manifest does not allow fileTransfer)", op, device)
		writeError(w, http.StatusForbidden, msg)
		r.refused(op, device, g.Commit, msg)
		return nil, false
	}
	c, connected, err := r.opts.Sessions.Connected(req.Context(), device)
	if err != nil {
		r.log.Error("device presence unavailable", "device_id", device, "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable; try again later")
		return nil, false
	}
	if !connected {
		writeError(w, http.StatusConflict, "device "+device+" is not connected (is mender-connect running on it?)")
		return nil, false
	}
	s := r.newSession(kind, op, device, r.opts.Source(req), c.Conn, g)
	s.used(wire.ProtoFileTransfer)
	s.rec.Protocols = []string{"filetransfer"}
	return s, true
}

// beginTransfer starts the session s in the store, under its limits; on
// failure it has answered.
func (r *Relay) beginTransfer(w http.ResponseWriter, req *http.Request, s *session) (*transfer, bool) {
	ctx := req.Context()
	sub, err := r.opts.Sessions.Subscribe(ctx, sessionTopic(s.rec.ID))
	if err != nil {
		r.log.Error("deviceconnect: cannot subscribe to the session's topic", "err", err)
		writeError(w, http.StatusServiceUnavailable, "store unavailable; try again later")
		return nil, false
	}
	refused, err := s.start(ctx)
	if err != nil || refused != "" {
		sub.Close()
		if err != nil {
			r.log.Error("deviceconnect: cannot start a session", "err", err)
			writeError(w, http.StatusServiceUnavailable, "store unavailable; try again later")
		} else {
			writeError(w, http.StatusTooManyRequests, refused)
		}
		return nil, false
	}
	r.log.Info("remote file transfer opened", "session", s.rec.ID, "kind", s.rec.Kind, "operator", s.rec.Operator, "device_id", s.rec.Device, "source", s.rec.Source)
	return &transfer{s: s, sub: sub, ctx: ctx}, true
}

// close ends the transfer: the device is told to close the session and
// the session is recorded.
func (t *transfer) close(err error) {
	s := t.s
	if err != nil {
		var he *httpErr
		if errors.As(err, &he) && he.status < 500 {
			s.end(ReasonClosed, err.Error())
		} else {
			s.end("error: "+err.Error(), err.Error())
		}
	}
	bg, cancel := context.WithTimeout(context.WithoutCancel(t.ctx), 5*time.Second)
	defer cancel()
	if reason, _ := s.ended(); reason != ReasonDeviceDisconnected {
		_ = t.send(bg, &wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeClose}})
	}
	t.sub.Close()
	s.finish()
}

// send stamps m with the session and relays it to the device.
func (t *transfer) send(ctx context.Context, m *wire.Msg) error {
	s := t.s
	m.Header.SessionID = s.rec.ID
	m.SetProp(wire.PropUserID, s.rec.Operator)
	frame := m.Encode()
	s.mu.Lock()
	lim := s.toDevice
	s.mu.Unlock()
	if err := waitBytes(ctx, lim, len(frame)); err != nil {
		return err
	}
	g := s.currentGrant()
	e := envelope{Kind: envFrame, Device: s.rec.Device, Conn: s.conn, Rate: g.BytesPerSecond, Msg: frame}
	if err := s.r.opts.Sessions.Publish(ctx, deviceTopic(s.rec.Device), e.marshal()); err != nil {
		return failf(http.StatusServiceUnavailable, "cannot relay to the device: %v", err)
	}
	s.count(len(frame), 0, nil, true)
	return nil
}

// errEnded: the session ended (revoked, expired, the device gone) while
// waiting for the device.
func (t *transfer) endedErr() error {
	reason, msg := t.s.ended()
	switch reason {
	case ReasonDeviceDisconnected:
		return failf(http.StatusConflict, "%s", msg)
	case ReasonIdle:
		return failf(http.StatusRequestTimeout, "%s", msg)
	}
	return failf(http.StatusForbidden, "%s", msg)
}

// recv returns the device's next message of this session, answering its
// pings; it waits at most the transfer timeout (or the grant's idle
// timeout, when shorter). block false returns nil at once when nothing is
// waiting.
func (t *transfer) recv(block bool) (*wire.Msg, error) {
	s, r := t.s, t.s.r
	timeout := r.opts.TransferTimeout
	if idle := s.currentGrant().IdleTimeout; idle > 0 && idle < timeout {
		timeout = idle
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(s.tickEvery())
	defer tick.Stop()
	for {
		if !block {
			select {
			case b, ok := <-t.sub.C():
				if m, err := t.accept(b, ok); m != nil || err != nil {
					return m, err
				}
				continue
			default:
				return nil, nil
			}
		}
		select {
		case <-s.done:
			return nil, t.endedErr()
		case <-t.ctx.Done():
			return nil, failf(http.StatusRequestTimeout, "the operator went away")
		case <-deadline.C:
			return nil, failf(http.StatusRequestTimeout, "the device did not answer within %s", timeout)
		case <-tick.C:
			s.tick(t.ctx)
		case b, ok := <-t.sub.C():
			m, err := t.accept(b, ok)
			if m != nil || err != nil {
				return m, err
			}
		}
	}
}

// accept screens one bus message: a message of this session from the
// device, an error, or neither (nil, nil: wait on).
func (t *transfer) accept(b []byte, ok bool) (*wire.Msg, error) {
	s := t.s
	if !ok {
		return nil, failf(http.StatusServiceUnavailable, "the relay lost the session; try again")
	}
	e, err := decodeEnvelope(b)
	if err != nil || e.Device != s.rec.Device {
		return nil, nil
	}
	if e.Kind == envGone {
		s.end(ReasonDeviceDisconnected, "the device disconnected")
		return nil, t.endedErr()
	}
	m, err := wire.Decode(e.Msg)
	if err != nil || m.Header.SessionID != s.rec.ID {
		return nil, nil
	}
	s.count(0, len(e.Msg), nil, true)
	if m.Header.Proto == wire.ProtoControl && m.Header.MsgType == wire.TypePing {
		return nil, t.send(t.ctx, &wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypePong}})
	}
	if m.Header.Proto == wire.ProtoControl && m.Header.MsgType == wire.TypePong {
		return nil, nil
	}
	return m, nil
}

// deviceFailure turns the device's error message into the operator's
// answer: a missing file is 404, a permission denied 403, the rest 400.
func deviceFailure(m *wire.Msg, what string) error {
	var text string
	if m.Header.Proto == wire.ProtoFileTransfer {
		var fe wire.TypedError
		if msgpack.Unmarshal(m.Body, &fe) == nil && fe.Error != nil {
			text = *fe.Error
		}
	} else {
		var ce wire.ControlError
		if msgpack.Unmarshal(m.Body, &ce) == nil {
			text = ce.Error
		}
	}
	if text == "" {
		text = "unknown error"
	}
	status := http.StatusBadRequest
	switch {
	case strings.Contains(text, "no such file or directory"):
		status = http.StatusNotFound
	case strings.Contains(text, "permission denied"), strings.Contains(text, "access denied"):
		status = http.StatusForbidden
	}
	return failf(status, "%s: the device says: %s", what, text)
}

// handshake opens the session with the device and checks that it accepts
// file transfer.
func (t *transfer) handshake() error {
	open := &wire.Msg{Header: wire.Header{Proto: wire.ProtoControl, MsgType: wire.TypeOpen}, Body: wire.MustMarshal(wire.Open{Versions: []int{wire.ProtocolVersion}})}
	if err := t.send(t.ctx, open); err != nil {
		return err
	}
	m, err := t.recv(true)
	if err != nil {
		return err
	}
	switch {
	case m.Header.Proto == wire.ProtoControl && m.Header.MsgType == wire.TypeError:
		return failf(http.StatusBadGateway, "%v", deviceFailure(m, "the device refused the session"))
	case m.Header.Proto != wire.ProtoControl || m.Header.MsgType != wire.TypeAccept:
		return failf(http.StatusBadGateway, "the device answered the session's opening with %s %q: it does not implement file transfer", protoName(m.Header.Proto), m.Header.MsgType)
	}
	var acc wire.Accept
	if err := msgpack.Unmarshal(m.Body, &acc); err != nil {
		return failf(http.StatusBadGateway, "the device's session acceptance is malformed: %v", err)
	}
	for _, p := range acc.Protocols {
		if p == wire.ProtoFileTransfer {
			return nil
		}
	}
	return failf(http.StatusBadGateway, "file transfer is disabled on the device (mender-connect's FileTransfer configuration)")
}

func answer(w http.ResponseWriter, err error) {
	var he *httpErr
	if errors.As(err, &he) {
		writeError(w, he.status, he.msg)
		return
	}
	writeError(w, http.StatusInternalServerError, err.Error())
}

// Download serves GET …/devices/{id}/download?path=: the file at path on
// the device, with the X-MEN-File-* headers mender-cli reads.
func (r *Relay) Download(w http.ResponseWriter, req *http.Request) {
	p := req.URL.Query().Get("path")
	if !path.IsAbs(p) {
		writeError(w, http.StatusBadRequest, "path must be an absolute path on the device (?path=/…)")
		return
	}
	s, ok := r.authorizeTransfer(w, req, KindDownload)
	if !ok {
		return
	}
	t, ok := r.beginTransfer(w, req, s)
	if !ok {
		return
	}
	err := t.download(w, p)
	if err != nil && !t.wrote {
		answer(w, err)
	}
	t.close(err)
	if err != nil && t.wrote {
		// The status is sent: cut the response short so that the
		// operator sees an incomplete transfer.
		panic(http.ErrAbortHandler)
	}
}

func (t *transfer) download(w http.ResponseWriter, p string) error {
	if err := t.handshake(); err != nil {
		return err
	}
	stat := &wire.Msg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.TypeStat}, Body: wire.MustMarshal(wire.Path{Path: &p})}
	if err := t.send(t.ctx, stat); err != nil {
		return err
	}
	m, err := t.recv(true)
	if err != nil {
		return err
	}
	if m.Header.MsgType == wire.TypeError {
		return deviceFailure(m, "cannot read "+p)
	}
	if m.Header.Proto != wire.ProtoFileTransfer || m.Header.MsgType != wire.TypeFileInfo {
		return failf(http.StatusBadGateway, "the device answered stat with %s %q", protoName(m.Header.Proto), m.Header.MsgType)
	}
	var fi wire.FileInfo
	if err := msgpack.Unmarshal(m.Body, &fi); err != nil {
		return failf(http.StatusBadGateway, "the device's file information is malformed: %v", err)
	}
	if fi.Mode == nil || !fs.FileMode(*fi.Mode).IsRegular() {
		return failf(http.StatusBadRequest, "%s is not a regular file on the device", p)
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Disposition", `attachment; filename="`+strings.ReplaceAll(path.Base(p), `"`, "")+`"`)
	h.Set(hdrPath, p)
	if fi.UID != nil {
		h.Set(hdrUID, strconv.FormatUint(uint64(*fi.UID), 10))
	}
	if fi.GID != nil {
		h.Set(hdrGID, strconv.FormatUint(uint64(*fi.GID), 10))
	}
	h.Set(hdrMode, strconv.FormatUint(uint64(*fi.Mode), 8))
	if fi.Size != nil {
		h.Set(hdrSize, strconv.FormatInt(*fi.Size, 10))
	}
	get := &wire.Msg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.TypeGetFile}, Body: wire.MustMarshal(wire.Path{Path: &p})}
	if err := t.send(t.ctx, get); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	var offset int64
	chunks := 0
	ack := func() error {
		a := &wire.Msg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.TypeAck}}
		a.SetProp(wire.PropOffset, offset)
		return t.send(t.ctx, a)
	}
	for {
		m, err := t.recv(true)
		if err != nil {
			return err
		}
		switch {
		case m.Header.MsgType == wire.TypeError:
			return deviceFailure(m, "cannot read "+p)
		case m.Header.Proto == wire.ProtoFileTransfer && m.Header.MsgType == wire.TypeChunk:
		default:
			continue
		}
		off, ok := m.Offset()
		if !ok || off != offset {
			return failf(http.StatusBadGateway, "the device sent a chunk at offset %d, expected %d", off, offset)
		}
		if len(m.Body) == 0 { // the end of the file
			if err := ack(); err != nil {
				return err
			}
			t.wrote = true
			return bw.Flush()
		}
		if !t.wrote {
			w.WriteHeader(http.StatusOK)
			t.wrote = true
		}
		if _, err := bw.Write(m.Body); err != nil {
			return failf(http.StatusRequestTimeout, "the operator went away")
		}
		offset += int64(len(m.Body))
		if chunks++; chunks >= ackEvery {
			chunks = 0
			if err := ack(); err != nil {
				return err
			}
		}
	}
}

// Upload serves PUT …/devices/{id}/upload: a multipart form with path
// (and optionally uid, gid and mode, in octal) before file, as mender-cli
// cp sends it; fields after the file are not read (the file is streamed
// to the device as it arrives). 201 when the device has it all.
func (r *Relay) Upload(w http.ResponseWriter, req *http.Request) {
	s, ok := r.authorizeTransfer(w, req, KindUpload)
	if !ok {
		return
	}
	// The body streams to the device as fast as the device (and the
	// grant's bandwidth cap) takes it: each read gets TransferTimeout
	// instead of a deadline for the whole body (a server that sets one,
	// as controller.Bounded does, would cut a long upload short).
	rc := http.NewResponseController(w)
	req.Body = &readDeadline{ReadCloser: req.Body, rc: rc, d: r.opts.TransferTimeout}
	form, err := req.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "the body must be multipart/form-data with path and file: "+err.Error())
		return
	}
	up := wire.UploadRequest{}
	var file io.Reader
	var srcName string
	for file == nil {
		part, err := form.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "malformed multipart body: "+err.Error())
			return
		}
		name := part.FormName()
		if name == "file" {
			file, srcName = part, part.FileName()
			break
		}
		v, err := io.ReadAll(io.LimitReader(part, 4097))
		if err != nil || len(v) > 4096 {
			writeError(w, http.StatusBadRequest, "form field "+name+" is longer than 4096 bytes or unreadable")
			return
		}
		val := strings.TrimSpace(string(v))
		switch name {
		case "path":
			up.Path = &val
		case "uid", "gid":
			n, err := strconv.ParseUint(val, 10, 32)
			if err != nil {
				writeError(w, http.StatusBadRequest, "form field "+name+" must be a number, not "+strconv.Quote(val))
				return
			}
			n32 := uint32(n)
			if name == "uid" {
				up.UID = &n32
			} else {
				up.GID = &n32
			}
		case "mode":
			n, err := strconv.ParseUint(val, 8, 32)
			if err != nil {
				writeError(w, http.StatusBadRequest, "form field mode must be octal permission bits (e.g. 644), not "+strconv.Quote(val))
				return
			}
			n32 := uint32(n)
			up.Mode = &n32
		}
	}
	if up.Path == nil || !path.IsAbs(*up.Path) {
		writeError(w, http.StatusBadRequest, "form field path must be an absolute path on the device, before the file")
		return
	}
	if file == nil {
		writeError(w, http.StatusBadRequest, "form field file is missing")
		return
	}
	if srcName != "" {
		up.SrcPath = &srcName
	}
	t, ok := r.beginTransfer(w, req, s)
	if !ok {
		return
	}
	err = t.upload(up, file)
	if err != nil {
		answer(w, err)
	} else {
		w.WriteHeader(http.StatusCreated)
	}
	t.close(err)
}

func (t *transfer) upload(up wire.UploadRequest, file io.Reader) error {
	if err := t.handshake(); err != nil {
		return err
	}
	put := &wire.Msg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.TypePutFile}, Body: wire.MustMarshal(up)}
	if err := t.send(t.ctx, put); err != nil {
		return err
	}
	var (
		acked, offset int64
		eofSent, done bool
	)
	// handle screens one message from the device. An ack carries the
	// offset of the last chunk the device took (the start of a chunk
	// with data; the end of the file for the last, empty chunk): the
	// upload is done at an ack of the file's end after that chunk.
	handle := func(m *wire.Msg) error {
		switch {
		case m.Header.MsgType == wire.TypeError:
			return deviceFailure(m, "cannot write "+*up.Path)
		case m.Header.Proto == wire.ProtoFileTransfer && m.Header.MsgType == wire.TypeAck:
			off, ok := m.Offset()
			if ok && off > acked {
				acked = off
			}
			if ok && eofSent && off >= offset {
				done = true
			}
		}
		return nil
	}
	m, err := t.recv(true)
	if err != nil {
		return err
	}
	if err := handle(m); err != nil {
		return err
	}
	buf := make([]byte, chunkSize)
	for eof := false; !eof; {
		n, err := io.ReadFull(file, buf)
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			eof = true
		case err != nil:
			return failf(http.StatusBadRequest, "reading the uploaded file: %v", err)
		}
		chunk := &wire.Msg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.TypeChunk}}
		if n > 0 {
			chunk.Body = buf[:n]
		}
		chunk.SetProp(wire.PropOffset, offset)
		if err := t.send(t.ctx, chunk); err != nil {
			return err
		}
		offset += int64(n)
		if eof && n > 0 { // then the end of the file
			end := &wire.Msg{Header: wire.Header{Proto: wire.ProtoFileTransfer, MsgType: wire.TypeChunk}}
			end.SetProp(wire.PropOffset, offset)
			if err := t.send(t.ctx, end); err != nil {
				return err
			}
		}
		eofSent = eof
		// Take what the device has said; wait while the window is full.
		for {
			block := !eof && offset > acked+ackWindow*chunkSize
			m, err := t.recv(block)
			if err != nil {
				return err
			}
			if m == nil {
				break
			}
			if err := handle(m); err != nil {
				return err
			}
		}
	}
	for !done {
		m, err := t.recv(true)
		if err != nil {
			return err
		}
		if err := handle(m); err != nil {
			return err
		}
	}
	// The device renames the file into place after its last
	// acknowledgement; an error it meets then arrives shortly after.
	// Waiting for the session's close would cost every upload a
	// timeout, so only an error already here is taken.
	for {
		m, err := t.recv(false)
		if err != nil {
			return err
		}
		if m == nil {
			return nil
		}
		if err := handle(m); err != nil {
			return err
		}
	}
}

// readDeadline moves the connection's read deadline forward before each
// read of a request body.
type readDeadline struct {
	io.ReadCloser
	rc *http.ResponseController
	d  time.Duration
}

func (b *readDeadline) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	return b.ReadCloser.Read(p)
}
