package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"
)

// Progress is shown only for artifacts larger than progressThreshold, at most
// once per progressInterval, and only when stderr is a terminal.
const (
	progressThreshold = 8 << 20
	progressInterval  = 100 * time.Millisecond
)

// progressBar draws one status line ("label  42%  120.0/286.1 MiB  85.3
// MiB/s") and rewrites it in place with \r. A nil *progressBar is valid and
// draws nothing, so callers need not check whether progress is wanted.
type progressBar struct {
	w     io.Writer
	label string
	total int64
	now   func() time.Time
	start time.Time
	last  time.Time
	drawn int // width of the line on screen
}

// newProgress returns a bar that draws on w when w is a terminal, quiet is
// false and total is above progressThreshold; otherwise nil.
func newProgress(w io.Writer, quiet bool, label string, total int64) *progressBar {
	if quiet || total <= progressThreshold || !isTerminal(w) {
		return nil
	}
	return newProgressBar(w, label, total, time.Now)
}

// newProgressBar returns a bar that always draws; now is its clock.
func newProgressBar(w io.Writer, label string, total int64, now func() time.Time) *progressBar {
	t := now()
	return &progressBar{w: w, label: label, total: total, now: now, start: t}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Update redraws the line for done of total bytes if the last draw was at
// least progressInterval ago.
func (p *progressBar) Update(done int64) {
	if p == nil {
		return
	}
	t := p.now()
	if p.drawn > 0 && t.Sub(p.last) < progressInterval {
		return
	}
	p.last = t
	pct := 0
	if p.total > 0 {
		pct = int(min(done, p.total) * 100 / p.total)
	}
	const mib = 1 << 20
	rate := 0.0
	if secs := t.Sub(p.start).Seconds(); secs > 0 {
		rate = float64(done) / mib / secs
	}
	line := fmt.Sprintf("%s %3d%%  %.1f/%.1f MiB  %.1f MiB/s",
		p.label, pct, float64(done)/mib, float64(p.total)/mib, rate)
	pad := max(p.drawn-len(line), 0)
	fmt.Fprintf(p.w, "\r%s%*s", line, pad, "")
	p.drawn = len(line)
}

// Done clears the line.
func (p *progressBar) Done() {
	if p == nil || p.drawn == 0 {
		return
	}
	fmt.Fprintf(p.w, "\r%*s\r", p.drawn, "")
	p.drawn = 0
}

// countingReader reports the bytes read through it to a progress bar.
type countingReader struct {
	r    io.Reader
	n    int64
	prog *progressBar
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	c.prog.Update(c.n)
	return n, err
}
