package install

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
)

// readSmall reads a whole file of at most limit bytes.
func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// copyPipelined copies src to dst with reads and writes overlapped: one
// goroutine fills buffers of bufSize from src (an artifact.File hashes as it
// is read) while the caller's goroutine writes the previous one. It returns
// nil only when src ended with io.EOF. More than limit bytes is an error.
// Nothing of src is read after copyPipelined returns.
func copyPipelined(ctx context.Context, dst io.Writer, src io.Reader, bufSize int, limit int64) (int64, error) {
	const nbuf = 3
	type chunk struct {
		buf []byte
		n   int
		err error // io.EOF after the last chunk
	}
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- make([]byte, bufSize)
	}
	full := make(chan chunk, nbuf)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(full)
		for {
			select {
			case <-stop:
				return
			default:
			}
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			n, err := fill(src, buf)
			full <- chunk{buf, n, err}
			if err != nil {
				return
			}
		}
	}()
	finish := func() {
		close(stop)
		for range full { // let the reader finish its current read
		}
		wg.Wait()
	}
	var total int64
	for c := range full {
		if c.err != nil && c.err != io.EOF {
			finish()
			return total, c.err
		}
		if total+int64(c.n) > limit {
			finish()
			return total, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
		}
		if c.n > 0 {
			m, err := dst.Write(c.buf[:c.n])
			total += int64(m)
			if err != nil {
				finish()
				return total, err
			}
		}
		if c.err == io.EOF {
			finish()
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			finish()
			return total, err
		}
		free <- c.buf
	}
	wg.Wait()
	return total, io.ErrUnexpectedEOF
}

// fill reads into buf until it is full or src fails; io.EOF comes back
// with the last bytes.
func fill(src io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := src.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// logWriter logs what a process writes, line by line, at most maxLogBytes
// of it; the rest is counted and dropped.
type logWriter struct {
	log     *slog.Logger
	msg     string
	level   slog.Level
	mu      sync.Mutex
	line    []byte
	logged  int
	dropped int
}

const (
	maxLogBytes = 64 << 10 // per process and stream
	maxLogLine  = 4 << 10
)

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			room := maxLogLine - len(w.line)
			if room > len(p) {
				room = len(p)
			}
			w.line = append(w.line, p[:room]...)
			w.dropped += len(p) - room
			break
		}
		w.line = append(w.line, p[:min(i, maxLogLine-len(w.line))]...)
		w.emit()
		p = p[i+1:]
	}
	return n, nil
}

func (w *logWriter) emit() {
	if w.logged+len(w.line) > maxLogBytes {
		w.dropped += len(w.line)
	} else if w.log != nil {
		w.log.Log(context.Background(), w.level, w.msg, "line", string(w.line))
		w.logged += len(w.line)
	}
	w.line = w.line[:0]
}

// Flush logs an unterminated last line and how much was dropped.
func (w *logWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.line) > 0 {
		w.emit()
	}
	if w.dropped > 0 && w.log != nil {
		w.log.Log(context.Background(), w.level, w.msg, "dropped_bytes", w.dropped)
		w.dropped = 0
	}
}

// limitedBuffer keeps the first limit bytes written to it.
type limitedBuffer struct {
	buf   bytes.Buffer
	limit int
	over  bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	room := l.limit - l.buf.Len()
	if room < len(p) {
		l.over = true
		if room > 0 {
			l.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return l.buf.Write(p)
}
