package remote

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/gitfleet/gitfleet/device/remote/wire"
	"github.com/vmihailenco/msgpack/v5"
)

// File transfer, as mender-connect answers mender-cli cp through the
// relay: stat and get_file (the device sends chunks, at most window
// unacknowledged), put_file (the device acknowledges the put, then at
// least every ackEvery chunks and the end).
const (
	window   = 20 // chunks in flight in a download
	ackEvery = 10 // chunks received before an upload's acknowledgement
)

// transfer is a session's file transfer in progress: a download runs in
// its own goroutine; an upload is written by the session's.
type transfer struct {
	// download
	acked   atomic.Int64
	end     atomic.Int64 // the file's end once the last chunk is sent, else -1
	ackSig  chan struct{}
	cancel  chan struct{}
	stopped sync.Once
	done    chan struct{}
	// upload
	upload *upload
}

type upload struct {
	f      *os.File
	final  string
	offset int64
	chunks int
	size   int64 // -1: not announced
	mode   fs.FileMode
	uid    int
	gid    int
}

// abort ends the transfer: a download stops, an upload's temporary file
// is removed.
func (t *transfer) abort() {
	if t.upload != nil {
		t.upload.discard()
		return
	}
	t.stopped.Do(func() { close(t.cancel) })
	<-t.done
}

func (u *upload) discard() {
	name := u.f.Name()
	_ = u.f.Close()
	_ = os.Remove(name)
}

// fail answers m with a file transfer error.
func (s *session) fail(m *wire.Msg, err error) {
	msg, typ := err.Error(), m.Header.MsgType
	_ = s.send(wire.New(wire.ProtoFileTransfer, wire.TypeError, "").WithBody(wire.MustMarshal(wire.TypedError{Error: &msg, MessageType: &typ})))
}

// absPath checks a path the operator names: absolute, and cleaned.
func absPath(p *string) (string, error) {
	if p == nil || *p == "" {
		return "", errors.New("invalid request parameters: path is missing")
	}
	if !path.IsAbs(*p) {
		return "", fmt.Errorf("invalid request parameters: path %q is not absolute", *p)
	}
	return filepath.Clean(*p), nil
}

func (s *session) fileMsg(m *wire.Msg) {
	switch m.Header.MsgType {
	case wire.TypeStat:
		s.stat(m)
	case wire.TypeGetFile:
		if s.transfer != nil {
			s.fail(m, errors.New("another file transfer is in progress"))
			return
		}
		if err := s.startDownload(m); err != nil {
			s.fail(m, err)
		}
	case wire.TypePutFile:
		if s.transfer != nil {
			s.fail(m, errors.New("another file transfer is in progress"))
			return
		}
		if err := s.startUpload(m); err != nil {
			s.fail(m, err)
		}
	case wire.TypeChunk:
		if s.transfer == nil || s.transfer.upload == nil {
			s.fail(m, errors.New("no file transfer in progress"))
			return
		}
		if err := s.chunk(m); err != nil {
			s.transfer.upload.discard()
			s.transfer = nil
			s.fail(m, err)
		}
	case wire.TypeAck:
		t := s.transfer
		if t == nil || t.upload != nil {
			s.fail(m, errors.New("no file transfer in progress"))
			return
		}
		if off, ok := m.IntProp(wire.PropOffset); ok {
			if off > t.acked.Load() {
				t.acked.Store(off)
			}
			if end := t.end.Load(); end >= 0 && off >= end {
				s.transfer = nil // done: the next transfer may start at once
			}
			select {
			case t.ackSig <- struct{}{}:
			default:
			}
		}
	case wire.TypeError:
		var e wire.TypedError
		_ = msgpack.Unmarshal(m.Body, &e)
		if e.Error != nil {
			s.cn.c.log.Info("remote terminal: the operator's side aborted the file transfer", "session", s.id, "err", *e.Error)
		}
		if s.transfer != nil {
			s.transfer.abort()
			s.transfer = nil
		}
	default:
		s.fail(m, fmt.Errorf("file transfer message type %q not supported", m.Header.MsgType))
	}
}

func (s *session) stat(m *wire.Msg) {
	var req wire.Path
	if err := msgpack.Unmarshal(m.Body, &req); err != nil {
		s.fail(m, fmt.Errorf("malformed request parameters: %v", err))
		return
	}
	p, err := absPath(req.Path)
	if err != nil {
		s.fail(m, err)
		return
	}
	var fi os.FileInfo
	err = s.cn.c.asUser(func() (err error) {
		fi, err = os.Stat(p)
		return err
	})
	if err != nil {
		s.fail(m, fmt.Errorf("failed to get file info from path %q: %w", p, err))
		return
	}
	size, mode := fi.Size(), uint32(fi.Mode())
	info := wire.FileInfo{Path: &p, Size: &size, Mode: &mode}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		info.UID, info.GID = &st.Uid, &st.Gid
	}
	_ = s.send(wire.New(wire.ProtoFileTransfer, wire.TypeFileInfo, "").WithBody(wire.MustMarshal(info)))
}

// startDownload opens the file and sends it in the background.
func (s *session) startDownload(m *wire.Msg) error {
	var req wire.Path
	if err := msgpack.Unmarshal(m.Body, &req); err != nil {
		return fmt.Errorf("malformed request parameters: %v", err)
	}
	p, err := absPath(req.Path)
	if err != nil {
		return err
	}
	var f *os.File
	if err := s.cn.c.asUser(func() (err error) {
		f, err = os.Open(p)
		return err
	}); err != nil {
		return fmt.Errorf("failed to open file for reading: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("%s is not a regular file", p)
	}
	t := &transfer{ackSig: make(chan struct{}, 1), cancel: make(chan struct{}), done: make(chan struct{})}
	t.end.Store(-1)
	s.transfer = t
	go func() {
		defer close(t.done)
		defer f.Close()
		err := s.download(t, f)
		if err != nil && !errors.Is(err, errAborted) {
			s.fail(m, err)
		}
		go s.post(func() {
			if s.transfer == t {
				s.transfer = nil
			}
		})
	}()
	return nil
}

var errAborted = errors.New("aborted")

// download sends f in chunks, at most window unacknowledged, then the
// empty chunk that ends it, and waits for its acknowledgement.
func (s *session) download(t *transfer, f *os.File) error {
	var offset int64
	buf := make([]byte, chunkSize)
	waitAck := func(until int64) error {
		for t.acked.Load() < until {
			select {
			case <-t.ackSig:
			case <-t.cancel:
				return errAborted
			case <-s.quit:
				return errAborted
			}
		}
		return nil
	}
	for {
		if err := waitAck(offset - window*chunkSize + 1); err != nil {
			return err
		}
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			c := wire.New(wire.ProtoFileTransfer, wire.TypeChunk, "").With(wire.PropOffset, offset).WithBody(append([]byte(nil), buf[:n]...))
			if s.send(c) != nil {
				return errAborted
			}
			offset += int64(n)
			s.touch()
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("failed to read the file: %w", err)
		}
	}
	t.end.Store(offset)
	if s.send(wire.New(wire.ProtoFileTransfer, wire.TypeChunk, "").With(wire.PropOffset, offset)) != nil {
		return errAborted
	}
	return waitAck(offset)
}

// startUpload checks the destination, creates the temporary file next to
// it and acknowledges the put.
func (s *session) startUpload(m *wire.Msg) error {
	c := s.cn.c
	var req wire.UploadRequest
	if err := msgpack.Unmarshal(m.Body, &req); err != nil {
		return fmt.Errorf("malformed request parameters: %v", err)
	}
	p, err := absPath(req.Path)
	if err != nil {
		return err
	}
	u := &upload{size: -1, mode: 0o644, uid: int(c.uid), gid: int(c.gid)}
	if req.Mode != nil {
		u.mode = fs.FileMode(*req.Mode).Perm()
	}
	if req.UID != nil {
		u.uid = int(*req.UID)
	}
	if req.GID != nil {
		u.gid = int(*req.GID)
	}
	if req.Size != nil && *req.Size >= 0 {
		u.size = *req.Size
	}
	if err := c.asUser(func() error { return u.create(p, req.SrcPath) }); err != nil {
		return err
	}
	s.transfer = &transfer{upload: u}
	_ = s.send(wire.New(wire.ProtoFileTransfer, wire.TypeAck, "").With(wire.PropOffset, int64(0)))
	return nil
}

// create checks the destination p (a directory takes the source's base
// name) and creates the temporary file next to it.
func (u *upload) create(p string, srcPath *string) error {
	if fi, err := os.Lstat(p); err == nil {
		switch {
		case fi.IsDir() && srcPath != nil && path.Base(*srcPath) != "/" && path.Base(*srcPath) != "." && path.Base(*srcPath) != "..":
			p = filepath.Join(p, path.Base(*srcPath))
			if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
				return fmt.Errorf("conflicting file path: %s exists and is not a regular file", p)
			}
		case fi.IsDir():
			return errors.New("conflicting file path: cannot overwrite directory")
		case !fi.Mode().IsRegular():
			return errors.New("conflicting file path: cannot overwrite irregular file")
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("error checking file location: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".upload-*")
	if err != nil {
		return fmt.Errorf("failed to create target file: %w", err)
	}
	u.f, u.final = f, p
	return nil
}

// chunk writes one chunk of the upload; the empty chunk ends it: the file
// gets its mode and owner, is synced and renamed into place, and only
// then is the end acknowledged, so that the operator learns of any
// failure.
func (s *session) chunk(m *wire.Msg) error {
	u := s.transfer.upload
	off, ok := m.IntProp(wire.PropOffset)
	if !ok {
		return errors.New("invalid file chunk message: missing offset property")
	}
	if off != u.offset {
		return fmt.Errorf("received unexpected chunk offset %d, expected %d", off, u.offset)
	}
	if len(m.Body) == 0 {
		c := s.cn.c
		if err := c.asUser(func() error { return u.commit(c.asRoot) }); err != nil {
			return err
		}
		s.transfer = nil
		s.cn.c.log.Info("remote terminal: file uploaded", "session", s.id, "operator", s.user, "path", u.final, "bytes", u.offset)
		_ = s.send(wire.New(wire.ProtoFileTransfer, wire.TypeAck, "").With(wire.PropOffset, u.offset))
		return nil
	}
	if u.size >= 0 && u.offset+int64(len(m.Body)) > u.size {
		return fmt.Errorf("the upload is longer than the %d bytes announced", u.size)
	}
	if _, err := u.f.Write(m.Body); err != nil {
		return fmt.Errorf("failed to write file chunk: %w", err)
	}
	u.offset += int64(len(m.Body))
	// Acknowledge every ackEvery chunks, and whenever nothing more is
	// waiting (as mender-connect does).
	if u.chunks++; u.chunks >= ackEvery || len(s.in) == 0 {
		u.chunks = 0
		_ = s.send(wire.New(wire.ProtoFileTransfer, wire.TypeAck, "").With(wire.PropOffset, off))
	}
	return nil
}

func (u *upload) commit(asRoot bool) error {
	fail := func(what string, err error) error {
		u.discard()
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := u.f.Chmod(u.mode); err != nil {
		return fail("failed to set file permissions", err)
	}
	if asRoot {
		if err := u.f.Chown(u.uid, u.gid); err != nil {
			return fail("failed to set file owner", err)
		}
	}
	if err := u.f.Sync(); err != nil {
		return fail("failed to write the file", err)
	}
	name := u.f.Name()
	if err := u.f.Close(); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("failed to write the file: %w", err)
	}
	if err := os.Rename(name, u.final); err != nil {
		_ = os.Remove(name)
		return fmt.Errorf("failed to commit uploaded file: %w", err)
	}
	if d, err := os.Open(filepath.Dir(u.final)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
