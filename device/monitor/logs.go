package monitor

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Line and read bounds of the log probes.
const (
	maxLine      = 4096    // longer lines are cut; the rest up to the newline is skipped
	maxReadScan  = 1 << 20 // bytes read from a file per scan; the rest waits for the next
	maxCmdQueued = 256     // matching command lines held between scans
)

// Exec starts a command whose standard output a log check reads. The
// returned wait reports how the command ended.
type Exec interface {
	Start(ctx context.Context, command string) (stdout io.ReadCloser, wait func() error, err error)
}

// ShellExec runs commands with /bin/sh -c, as Mender Monitor does.
type ShellExec struct{}

// Start implements Exec.
func (ShellExec) Start(ctx context.Context, command string) (io.ReadCloser, func() error, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stdin = nil
	cmd.Stderr = nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	return out, cmd.Wait, nil
}

type logProbe struct {
	path     string
	patterns []*regexp.Regexp
	file     follower
	cmd      *commandSource
}

func newLogProbe(path string, patterns []string) *logProbe {
	p := &logProbe{path: path}
	for _, s := range patterns {
		p.patterns = append(p.patterns, regexp.MustCompile(s)) // checked by Validate
	}
	return p
}

func (p *logProbe) interval() time.Duration { return 5 * time.Second }

func (p *logProbe) close() {
	p.file.close()
	if p.cmd != nil {
		p.cmd.stop()
	}
}

func (p *logProbe) match(line string) bool {
	for _, re := range p.patterns {
		if re.MatchString(line) {
			return true
		}
	}
	return false
}

func (p *logProbe) scan(_ context.Context, env *scanEnv, base map[string]string) ([]observation, error) {
	var lines []string
	var err error
	if cmd, ok := strings.CutPrefix(p.path, "@"); ok {
		if p.cmd == nil {
			p.cmd = startCommand(env.ctx, env.m.opts.Exec, cmd, p.match, env.m.opts.Logger)
		}
		lines, err = p.cmd.take()
	} else {
		lines, err = p.file.read(env, env.path(p.path), base, p.match)
	}
	if len(lines) == 0 {
		return nil, err
	}
	// One alert per check: raised by the first matching line, with that line
	// as evidence; later lines while it is open change nothing.
	return []observation{{key: "match", event: true, evidence: lines[0]}}, err
}

// follower follows one file across rotation (rename and a new file) and
// truncation, keeping its inode and offset in the baseline.
type follower struct {
	f     *os.File
	inode string
	off   int64
	skip  bool // inside an over-long line
}

func (fl *follower) close() {
	if fl.f != nil {
		fl.f.Close()
		fl.f = nil
	}
}

func inodeOf(info fs.FileInfo) string {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	}
	return ""
}

func (fl *follower) read(env *scanEnv, path string, base map[string]string, match func(string) bool) ([]string, error) {
	var out []string
	budget := int64(maxReadScan)
	info, statErr := os.Stat(path)
	if fl.f != nil && (statErr != nil || inodeOf(info) != fl.inode) {
		// Rotated: finish the old file, then move on to the new one.
		out = append(out, fl.drain(&budget, match)...)
		fl.close()
	}
	if statErr != nil {
		if errors.Is(statErr, fs.ErrNotExist) {
			return out, nil // not there yet (or between rename and re-create)
		}
		return out, fmt.Errorf("log %s: %w", path, statErr)
	}
	if fl.f == nil {
		f, err := os.Open(path)
		if err != nil {
			return out, fmt.Errorf("log %s: %w", path, err)
		}
		fl.f, fl.inode, fl.skip = f, inodeOf(info), false
		switch {
		case base["inode"] == fl.inode:
			fl.off, _ = strconv.ParseInt(base["offset"], 10, 64) // resumed after a restart
		case base["inode"] == "":
			fl.off = info.Size() // first start: history is not news
		default:
			fl.off = 0 // a file we have not seen: a rotation
		}
	}
	if info.Size() < fl.off {
		fl.off, fl.skip = 0, false // truncated
	}
	out = append(out, fl.drain(&budget, match)...)
	env.set(base, "inode", fl.inode)
	env.set(base, "offset", strconv.FormatInt(fl.off, 10))
	return out, nil
}

// drain reads complete lines from the offset, within budget bytes.
func (fl *follower) drain(budget *int64, match func(string) bool) []string {
	var out []string
	if _, err := fl.f.Seek(fl.off, io.SeekStart); err != nil {
		return nil
	}
	r := bufio.NewReaderSize(io.LimitReader(fl.f, *budget), maxLine)
	for {
		chunk, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// An over-long line: match its first maxLine bytes, skip the rest.
			if !fl.skip && match(string(chunk)) {
				out = append(out, string(chunk))
			}
			fl.skip = true
			fl.off += int64(len(chunk))
			*budget -= int64(len(chunk))
			continue
		}
		if err != nil {
			return out // a partial last line waits for its newline
		}
		fl.off += int64(len(chunk))
		*budget -= int64(len(chunk))
		line := strings.TrimRight(string(chunk), "\r\n")
		if !fl.skip && match(line) {
			out = append(out, line)
		}
		fl.skip = false
	}
}

// commandSource runs a command, keeps the lines of its output that match,
// and restarts it with exponential backoff (1s doubling to 5m, reset after a
// run of a minute) whenever it exits.
type commandSource struct {
	mu      sync.Mutex
	lines   []string
	dropped int
	lastErr error
	cancel  context.CancelFunc
	done    chan struct{}
}

func startCommand(ctx context.Context, ex Exec, command string, match func(string) bool, log interface {
	Warn(string, ...any)
}) *commandSource {
	ctx, cancel := context.WithCancel(ctx)
	c := &commandSource{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		delay := time.Second
		for ctx.Err() == nil {
			began := time.Now()
			err := c.runOnce(ctx, ex, command, match)
			if ctx.Err() != nil {
				return
			}
			if time.Since(began) > time.Minute {
				delay = time.Second
			}
			c.mu.Lock()
			c.lastErr = fmt.Errorf("log @%s: command ended (%v); restarted with backoff", command, err)
			c.mu.Unlock()
			log.Warn("monitor command ended", "command", command, "err", err, "restart_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			delay = min(delay*2, 5*time.Minute)
		}
	}()
	return c
}

func (c *commandSource) runOnce(ctx context.Context, ex Exec, command string, match func(string) bool) error {
	out, wait, err := ex.Start(ctx, command)
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(out, maxLine)
	skip := false
	for {
		chunk, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			if !skip && match(string(chunk)) {
				c.add(string(chunk))
			}
			skip = true
			continue
		}
		if len(chunk) > 0 && !skip {
			if line := strings.TrimRight(string(chunk), "\r\n"); match(line) {
				c.add(line)
			}
		}
		skip = false
		if err != nil {
			break
		}
	}
	out.Close()
	return wait()
}

func (c *commandSource) add(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.lines) >= maxCmdQueued {
		c.dropped++
		return
	}
	c.lines = append(c.lines, line)
}

// take returns the lines matched since the last call and, once, the reason
// the command last ended.
func (c *commandSource) take() ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	lines := c.lines
	c.lines = nil
	err := c.lastErr
	return lines, err
}

func (c *commandSource) stop() {
	c.cancel()
	<-c.done
}

// --- root login ---------------------------------------------------------------

// rootLoginPatterns match ssh and sudo root login attempts as sshd and
// pam_unix write them to the auth log.
var rootLoginPatterns = []string{
	`sshd\[\d+\]: (Failed|Accepted) \S+ for (invalid user )?root from `,
	`sshd\[\d+\]: ROOT LOGIN REFUSED`,
	`sshd\[\d+\]: .*authentication failure;.* user=root\b`,
	`pam_unix\(sudo:auth\): authentication failure;.*logname=root\b`,
	`sudo: +\S+ : .*incorrect password attempts? ;.*USER=root\b`,
	`su(\[\d+\])?: .*(FAILED SU|authentication failure).*(to root|user=root)`,
}

// rootLoginJournal is used where there is no auth log: the journal's auth and
// authpriv facilities, new entries only.
const rootLoginJournal = "@journalctl --follow --lines=0 --output=short SYSLOG_FACILITY=4 SYSLOG_FACILITY=10"

func newRootLoginProbe(path string) prober {
	return &rootLoginProbe{path: path}
}

type rootLoginProbe struct {
	path string
	log  *logProbe
}

func (p *rootLoginProbe) interval() time.Duration { return 5 * time.Second }

func (p *rootLoginProbe) close() {
	if p.log != nil {
		p.log.close()
	}
}

func (p *rootLoginProbe) scan(ctx context.Context, env *scanEnv, base map[string]string) ([]observation, error) {
	if p.log == nil {
		path := p.path
		if path == "" {
			path = rootLoginJournal
			for _, cand := range []string{"/var/log/auth.log", "/var/log/secure"} {
				if _, err := os.Stat(env.path(cand)); err == nil {
					path = cand
					break
				}
			}
		}
		p.log = newLogProbe(path, rootLoginPatterns)
	}
	return p.log.scan(ctx, env, base)
}
