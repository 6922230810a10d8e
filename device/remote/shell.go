package remote

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"github.com/gitfleet/gitfleet/device/remote/wire"
)

// Terminal size bounds; the default is mender-connect's.
const (
	defaultRows, defaultCols = 40, 80
	maxTermSide              = 1000
)

// inputWait bounds one write of the operator's input to the shell (a
// shell that reads nothing for this long ends the session).
const inputWait = 30 * time.Second

// shell is a session's shell on a pseudo-terminal.
type shell struct {
	cmd      *exec.Cmd
	pty      *os.File
	exited   chan struct{} // the process was reaped
	pumped   chan struct{} // its output is all sent
	stopping atomic.Bool
	waitErr  error
}

// shellMsg serves the shell protocol.
func (s *session) shellMsg(m *wire.Msg) {
	switch m.Header.MsgType {
	case wire.TypeNew:
		if s.shell != nil {
			s.cn.refuseOne(m, "a shell is already running in this session")
			return
		}
		rows, cols := termSize(m)
		sh, err := s.startShell(rows, cols)
		if err != nil {
			s.cn.c.log.Warn("remote terminal: cannot start the shell", "session", s.id, "err", err)
			s.cn.refuseOne(m, "cannot start the shell: "+err.Error())
			return
		}
		s.shell = sh
		s.cn.c.log.Info("remote terminal: shell started", "session", s.id, "operator", s.user, "pid", sh.cmd.Process.Pid, "user", s.cn.c.userName)
		_ = s.send(wire.New(wire.ProtoShell, wire.TypeNew, "").With(wire.PropStatus, wire.ShellNormal).WithBody([]byte("Shell started")))
	case wire.TypeShell:
		if s.shell == nil {
			s.cn.refuseOne(m, "no shell is running in this session")
			return
		}
		_ = s.shell.pty.SetWriteDeadline(time.Now().Add(inputWait))
		if _, err := s.shell.pty.Write(m.Body); err != nil {
			s.end("the shell does not take its input: "+err.Error(), true)
		}
	case wire.TypeResize:
		if s.shell != nil {
			rows, cols := termSize(m)
			_ = pty.Setsize(s.shell.pty, &pty.Winsize{Rows: rows, Cols: cols})
		}
	case wire.TypeStop:
		if s.shell != nil {
			s.shell.stop()
			s.shell = nil
			s.cn.c.log.Info("remote terminal: shell stopped by the operator", "session", s.id)
		}
		_ = s.send(wire.New(wire.ProtoShell, wire.TypeStop, "").With(wire.PropStatus, wire.ShellNormal))
	case wire.TypePing:
		_ = s.send(wire.New(wire.ProtoShell, wire.TypePong, "").With(wire.PropStatus, int64(3)))
	case wire.TypePong:
	default:
		s.cn.refuseOne(m, fmt.Sprintf("shell message %q not understood", m.Header.MsgType))
	}
}

// termSize reads the terminal_height and terminal_width properties, or
// the default size.
func termSize(m *wire.Msg) (rows, cols uint16) {
	h, okh := m.IntProp(wire.PropHeight)
	w, okw := m.IntProp(wire.PropWidth)
	if !okh || !okw || h <= 0 || w <= 0 || h > maxTermSide || w > maxTermSide {
		return defaultRows, defaultCols
	}
	return uint16(h), uint16(w)
}

// shellPath is the PATH of shells.
const shellPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// startShell starts the configured shell as the configured user on a new
// pseudo-terminal, in a session (and process group) of its own, and
// relays its output.
func (s *session) startShell(rows, cols uint16) (*shell, error) {
	c := s.cn.c
	cmd := exec.Command(c.opts.Shell)
	cmd.Env = []string{
		"HOME=" + c.home, "USER=" + c.userName, "LOGNAME=" + c.userName,
		"SHELL=" + c.opts.Shell, "TERM=xterm-256color", "PATH=" + shellPath,
	}
	cmd.Dir = "/"
	if fi, err := os.Stat(c.home); err == nil && fi.IsDir() {
		cmd.Dir = c.home
	}
	attrs := &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if c.asRoot && (c.uid != 0 || c.gid != 0) {
		attrs.Credential = &syscall.Credential{Uid: c.uid, Gid: c.gid, Groups: c.groups}
	}
	f, err := pty.StartWithAttrs(cmd, &pty.Winsize{Rows: rows, Cols: cols}, attrs)
	if err != nil {
		return nil, err
	}
	if pf, err := pollable(f); err == nil {
		f = pf
	} else {
		s.cn.c.log.Warn("remote terminal: the pseudo-terminal stays blocking", "err", err)
	}
	sh := &shell{cmd: cmd, pty: f, exited: make(chan struct{}), pumped: make(chan struct{})}
	go func() {
		sh.waitErr = cmd.Wait()
		close(sh.exited)
		// A background job may keep the terminal open: its output is
		// not waited for beyond a moment.
		t := time.NewTimer(time.Second)
		defer t.Stop()
		select {
		case <-sh.pumped:
		case <-t.C:
			_ = f.Close()
		}
	}()
	go s.pump(sh)
	return sh, nil
}

// pump sends the shell's output until it ends; a shell that exits on its
// own is reported to the operator with a shell stop.
func (s *session) pump(sh *shell) {
	defer close(sh.pumped)
	buf := make([]byte, chunkSize)
	for {
		n, err := sh.pty.Read(buf)
		if n > 0 {
			s.touch()
			out := make([]byte, n)
			copy(out, buf[:n])
			if s.send(wire.New(wire.ProtoShell, wire.TypeShell, "").With(wire.PropStatus, wire.ShellNormal).WithBody(out)) != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	if sh.stopping.Load() {
		return
	}
	select {
	case <-sh.exited:
	case <-s.quit:
		return
	}
	why := "the shell exited"
	var ee *exec.ExitError
	if errors.As(sh.waitErr, &ee) {
		why = "the shell exited: " + ee.Error()
	}
	_ = s.send(wire.New(wire.ProtoShell, wire.TypeStop, "").With(wire.PropStatus, wire.ShellNormal).WithBody([]byte(why)))
	go s.post(func() {
		if s.shell == sh {
			s.shell = nil
			sh.stop()
		}
	})
}

// pollable returns f's descriptor in non-blocking mode as a File that the
// runtime polls, so that closing it ends a read in progress (pty opens
// /dev/ptmx blocking); f is closed.
func pollable(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var fd int
	var derr error
	if err := rc.Control(func(raw uintptr) { fd, derr = syscall.Dup(int(raw)) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	syscall.CloseOnExec(fd)
	nf := os.NewFile(uintptr(fd), f.Name())
	f.Close()
	return nf, nil
}

// stop ends the shell and every process of its session (its jobs have
// process groups of their own): SIGHUP, then SIGKILL after two seconds;
// and waits for it and its output.
func (sh *shell) stop() {
	sh.stopping.Store(true)
	pid := sh.cmd.Process.Pid
	signalSession(pid, syscall.SIGHUP)
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-sh.exited:
	case <-t.C:
		signalSession(pid, syscall.SIGKILL)
		<-sh.exited
	}
	// Whatever else of the session still runs (a job that ignored SIGHUP).
	signalSession(pid, syscall.SIGKILL)
	_ = sh.pty.Close()
	<-sh.pumped
}

// signalSession sends sig to every process of session sid (the shell's
// pid: it is the session leader), found in /proc.
func signalSession(sid int, sig syscall.Signal) {
	_ = syscall.Kill(-sid, sig)
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp session …; comm may hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 3 && f[3] == strconv.Itoa(sid) {
			_ = syscall.Kill(pid, sig)
		}
	}
}
