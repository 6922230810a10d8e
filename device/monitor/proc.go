package monitor

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// set records v under k in a probe's baseline, noting a change.
func (e *scanEnv) set(base map[string]string, k, v string) {
	if base[k] != v {
		base[k] = v
		e.baselineChanged = true
	}
}

func (e *scanEnv) del(base map[string]string, k string) {
	if _, ok := base[k]; ok {
		delete(base, k)
		e.baselineChanged = true
	}
}

// path maps a device path to the probe's root.
func (e *scanEnv) path(p string) string {
	return filepath.Join(e.root, p)
}

// readSmall reads at most limit bytes of a file.
func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// pids lists the numeric entries of root/proc.
func pids(root string) ([]int, error) {
	d, err := os.Open(filepath.Join(root, "proc"))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	var out []int
	for {
		names, err := d.Readdirnames(256)
		for _, n := range names {
			if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
				out = append(out, pid)
			}
		}
		if err == io.EOF || len(names) == 0 {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// process is what the probes tell of a process.
type process struct {
	pid  int
	comm string
	exe  string
}

func (p process) String() string {
	exe := p.exe
	if exe == "" {
		exe = "executable unknown"
	}
	return fmt.Sprintf("pid %d (%s) %s", p.pid, p.comm, exe)
}

func readProcess(root string, pid int) process {
	dir := filepath.Join(root, "proc", strconv.Itoa(pid))
	p := process{pid: pid}
	if b, err := readSmall(filepath.Join(dir, "comm"), 64); err == nil {
		p.comm = strings.TrimRight(string(b), "\n")
	}
	p.exe, _ = os.Readlink(filepath.Join(dir, "exe"))
	return p
}

// processesNamed returns the PIDs whose comm (the kernel's 15-byte name) or
// executable base name is name.
func processesNamed(root, name string) ([]process, error) {
	all, err := pids(root)
	if err != nil {
		return nil, err
	}
	comm := name
	if len(comm) > 15 {
		comm = comm[:15]
	}
	var out []process
	for _, pid := range all {
		b, err := readSmall(filepath.Join(root, "proc", strconv.Itoa(pid), "comm"), 64)
		if err != nil {
			continue // gone meanwhile
		}
		c := strings.TrimRight(string(b), "\n")
		if c != comm {
			continue
		}
		p := readProcess(root, pid)
		if len(name) > 15 && p.exe != "" && filepath.Base(strings.TrimSuffix(p.exe, " (deleted)")) != name {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// socket is one listening socket from /proc/net/{tcp,udp}{,6}.
type socket struct {
	proto string
	addr  string
	port  int
	inode string
}

// listeningSockets parses root/proc/net/{tcp,tcp6,udp,udp6}: TCP sockets in
// LISTEN (0A) and UDP sockets not connected to a peer.
func listeningSockets(root string) ([]socket, error) {
	var out []socket
	found := false
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open(filepath.Join(root, "proc", "net", proto))
		if err != nil {
			continue // no IPv6, for instance
		}
		found = true
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 {
				continue
			}
			st := fs[3]
			if strings.HasPrefix(proto, "tcp") && st != "0A" {
				continue
			}
			if strings.HasPrefix(proto, "udp") && (st != "07" || !zeroAddr(fs[2])) {
				continue
			}
			addr, port, ok := parseHexAddr(fs[1])
			if !ok {
				continue
			}
			out = append(out, socket{proto: strings.TrimSuffix(proto, "6"), addr: addr, port: port, inode: fs[9]})
		}
		f.Close()
	}
	if !found {
		return nil, fmt.Errorf("no /proc/net/tcp or udp under %s", root)
	}
	return out, nil
}

func zeroAddr(s string) bool {
	a, p, _ := strings.Cut(s, ":")
	return strings.Trim(a, "0") == "" && strings.Trim(p, "0") == ""
}

// parseHexAddr decodes the kernel's "0100007F:1F90" (host byte order words).
func parseHexAddr(s string) (string, int, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return "", 0, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return "", 0, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return "", 0, false
	}
	// Each 32-bit word is printed in host (little-endian here) order.
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		ip[i], ip[i+1], ip[i+2], ip[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	if len(ip) == 4 {
		return fmt.Sprintf("%d.%d.%d.%d", ip[0], ip[1], ip[2], ip[3]), int(port), true
	}
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < 16; i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%x", uint16(ip[i])<<8|uint16(ip[i+1]))
	}
	b.WriteByte(']')
	return b.String(), int(port), true
}

// socketOwners maps socket inodes to the processes holding them, by reading
// the links in root/proc/*/fd. Only the wanted inodes are looked for.
func socketOwners(root string, want map[string]bool) map[string]process {
	out := map[string]process{}
	all, err := pids(root)
	if err != nil {
		return out
	}
	for _, pid := range all {
		dir := filepath.Join(root, "proc", strconv.Itoa(pid), "fd")
		d, err := os.Open(dir)
		if err != nil {
			continue // not ours to read, or gone
		}
		names, _ := d.Readdirnames(-1)
		d.Close()
		for _, n := range names {
			l, err := os.Readlink(filepath.Join(dir, n))
			if err != nil || !strings.HasPrefix(l, "socket:[") {
				continue
			}
			ino := strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")
			if want[ino] {
				if _, ok := out[ino]; !ok {
					out[ino] = readProcess(root, pid)
				}
			}
		}
		if len(out) == len(want) {
			break
		}
	}
	return out
}

// environHas reports the value of key in a NUL-separated environ block.
func environHas(env []byte, key string) (string, bool) {
	prefix := []byte(key + "=")
	for _, kv := range bytes.Split(env, []byte{0}) {
		if bytes.HasPrefix(kv, prefix) {
			return string(kv[len(prefix):]), true
		}
	}
	return "", false
}

func itoa(i int) string { return strconv.Itoa(i) }
