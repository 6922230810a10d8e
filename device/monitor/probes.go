package monitor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func newProbe(c Check) prober {
	switch {
	case c.Log != nil:
		return newLogProbe(c.Log.Path, []string{c.Log.Pattern})
	case c.Service != nil:
		return &serviceProbe{name: c.Service.Name}
	case c.ListeningPorts != nil:
		return &portsProbe{allow: c.ListeningPorts.Allow}
	case c.Setuid != nil:
		return &setuidProbe{paths: c.Setuid.Paths}
	case c.FileChange != nil:
		return &fileChangeProbe{paths: c.FileChange.Paths}
	case c.ProcessRestart != nil:
		return &restartProbe{name: c.ProcessRestart.Name}
	case c.Traffic != nil:
		return &trafficProbe{cfg: *c.Traffic}
	case c.Wifi != nil:
		return &wifiProbe{cfg: *c.Wifi}
	case c.RootLogin != nil:
		return newRootLoginProbe(c.RootLogin.Log)
	case c.FailedDeployments != nil:
		return &deploymentsProbe{}
	case c.LibraryInjection != nil:
		return &injectionProbe{}
	}
	panic("monitor: check without a probe passed Validate")
}

// --- service ---------------------------------------------------------------

type serviceProbe struct{ name string }

func (p *serviceProbe) interval() time.Duration { return 30 * time.Second }

func isUnit(name string) bool {
	for _, s := range []string{".service", ".socket", ".scope", ".mount", ".timer"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

func (p *serviceProbe) scan(_ context.Context, env *scanEnv, _ map[string]string) ([]observation, error) {
	if isUnit(p.name) {
		// Under systemd a unit is running while its cgroup holds a process.
		// No systemctl, no D-Bus: the cgroup file system, unified (v2),
		// hybrid or legacy (v1, the name=systemd hierarchy).
		slice := ""
		for _, dir := range []string{"/sys/fs/cgroup/system.slice", "/sys/fs/cgroup/unified/system.slice", "/sys/fs/cgroup/systemd/system.slice"} {
			if _, err := os.Stat(env.path(dir)); err == nil {
				slice = env.path(dir)
				break
			}
		}
		if slice == "" {
			return nil, fmt.Errorf("service %s: no systemd cgroup hierarchy (/sys/fs/cgroup/system.slice): is systemd running? name a process instead of a unit", p.name)
		}
		b, err := readSmall(filepath.Join(slice, p.name, "cgroup.procs"), 4096)
		if err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return nil, nil
		}
		return []observation{{key: p.name, evidence: "unit " + p.name + " has no running process"}}, nil
	}
	procs, err := processesNamed(env.root, p.name)
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", p.name, err)
	}
	if len(procs) == 0 {
		return []observation{{key: p.name, evidence: "no process named " + p.name + " is running"}}, nil
	}
	return nil, nil
}

// --- listening ports --------------------------------------------------------

type portsProbe struct {
	allow  []int
	owners map[string]process // socket inode → owner, from earlier scans
}

func (p *portsProbe) interval() time.Duration { return time.Minute }

func (p *portsProbe) scan(_ context.Context, env *scanEnv, _ map[string]string) ([]observation, error) {
	socks, err := listeningSockets(env.root)
	if err != nil {
		return nil, fmt.Errorf("listening ports: %w", err)
	}
	var bad []socket
	want := map[string]bool{}
	for _, s := range socks {
		if !slices.Contains(p.allow, s.port) {
			bad = append(bad, s)
			want[s.inode] = true
		}
	}
	if len(bad) == 0 {
		return nil, nil
	}
	// Only sockets not seen before cost a pass over /proc/*/fd: a port that
	// stays open is not looked up again at every scan.
	missing := map[string]bool{}
	for ino := range want {
		if _, ok := p.owners[ino]; !ok {
			missing[ino] = true
		}
	}
	owners := map[string]process{}
	if len(missing) > 0 {
		owners = socketOwners(env.root, missing)
	}
	for ino := range want {
		if o, ok := p.owners[ino]; ok {
			owners[ino] = o
		}
	}
	p.owners = owners // forget closed sockets
	var obs []observation
	seen := map[string]bool{}
	for _, s := range bad {
		key := s.proto + "/" + strconv.Itoa(s.port)
		if seen[key+s.addr] {
			continue
		}
		seen[key+s.addr] = true
		owner := "owner unknown (no permission to read its /proc/PID/fd)"
		if o, ok := owners[s.inode]; ok {
			owner = o.String()
		}
		obs = append(obs, observation{key: key, evidence: fmt.Sprintf("%s %s:%d listening outside the allow list: %s", s.proto, s.addr, s.port, owner)})
	}
	return obs, nil
}

// --- set-uid ----------------------------------------------------------------

type setuidProbe struct{ paths []string }

const maxWalk = 100000

func (p *setuidProbe) interval() time.Duration { return 10 * time.Minute }

func (p *setuidProbe) scan(ctx context.Context, env *scanEnv, base map[string]string) ([]observation, error) {
	found := map[string]bool{}
	n := 0
	var walkErr error
	missing := 0
	for _, top := range p.paths {
		if _, err := os.Lstat(env.path(top)); errors.Is(err, fs.ErrNotExist) {
			// A watched tree this device does not have (no /opt, say):
			// nothing can appear there unseen until it exists.
			missing++
			continue
		}
		err := filepath.WalkDir(env.path(top), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if path == env.path(top) {
					return err
				}
				return nil // an unreadable subtree
			}
			if n++; n > maxWalk {
				return fmt.Errorf("more than %d entries under the watched paths", maxWalk)
			}
			if n%1024 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			if d.Type().IsRegular() {
				if info, err := d.Info(); err == nil && info.Mode()&fs.ModeSetuid != 0 {
					rel, _ := filepath.Rel(env.root, path)
					found["/"+filepath.ToSlash(rel)] = true
				}
			}
			return nil
		})
		if err != nil && walkErr == nil {
			walkErr = fmt.Errorf("setuid %s: %w", top, err)
		}
	}
	if walkErr != nil {
		return nil, walkErr
	}
	if missing == len(p.paths) {
		return nil, fmt.Errorf("setuid: none of the watched paths exists (%s)", strings.Join(p.paths, ", "))
	}
	if base["initialised"] == "" {
		for f := range found {
			env.set(base, "file:"+f, "1")
		}
		env.set(base, "initialised", "1")
		return nil, nil
	}
	var obs []observation
	for f := range found {
		if base["file:"+f] == "" {
			obs = append(obs, observation{key: f, evidence: "new set-uid executable " + f})
		}
	}
	slices.SortFunc(obs, func(a, b observation) int { return strings.Compare(a.key, b.key) })
	return obs, nil
}

// --- file change ------------------------------------------------------------

type fileChangeProbe struct{ paths []string }

func (p *fileChangeProbe) interval() time.Duration { return 5 * time.Minute }

func trimDigest(d string) string { return strings.ToLower(strings.TrimPrefix(d, "sha256:")) }

func statKey(info fs.FileInfo) (inode string, quick string) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return "", ""
	}
	inode = fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	quick = fmt.Sprintf("%s/%d/%d/%d", inode, info.Size(), info.ModTime().UnixNano(), st.Ctim.Nano())
	return inode, quick
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (p *fileChangeProbe) scan(_ context.Context, env *scanEnv, base map[string]string) ([]observation, error) {
	var obs []observation
	var errs []error
	for _, path := range p.paths {
		full := env.path(path)
		info, err := os.Stat(full)
		if errors.Is(err, fs.ErrNotExist) {
			if base["sha:"+path] != "" {
				obs = append(obs, observation{key: path, ident: "removed", evidence: path + " was removed"})
			}
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		inode, quick := statKey(info)
		digest := base["cur:"+path]
		if quick == "" || quick != base["quick:"+path] || digest == "" {
			if digest, err = fileDigest(full); err != nil {
				errs = append(errs, err)
				continue
			}
			env.set(base, "quick:"+path, quick)
			env.set(base, "cur:"+path, digest)
		}
		want := base["sha:"+path]
		exp := env.m.st.Expected[path]
		if want == "" || digest == exp {
			// First sight, or the update brought exactly this file (new
			// content, or the same content in a new inode): new baseline.
			env.set(base, "sha:"+path, digest)
			env.set(base, "inode:"+path, inode)
			continue
		}
		switch {
		case digest != want:
			obs = append(obs, observation{key: path, ident: digest + "@" + inode,
				evidence: fmt.Sprintf("%s sha256 changed from %s to %s", path, want, digest)})
		case inode != base["inode:"+path]:
			obs = append(obs, observation{key: path, ident: digest + "@" + inode,
				evidence: fmt.Sprintf("%s inode changed from %s to %s (same content)", path, base["inode:"+path], inode)})
		}
	}
	return obs, errors.Join(errs...)
}

// --- process restart --------------------------------------------------------

type restartProbe struct{ name string }

func (p *restartProbe) interval() time.Duration { return 30 * time.Second }

func (p *restartProbe) scan(_ context.Context, env *scanEnv, base map[string]string) ([]observation, error) {
	procs, err := processesNamed(env.root, p.name)
	if err != nil {
		return nil, fmt.Errorf("process %s: %w", p.name, err)
	}
	if len(procs) == 0 {
		return nil, nil // not running: the service probe's business; keep the baseline
	}
	ids := make([]string, len(procs))
	for i, pr := range procs {
		ids[i] = strconv.Itoa(pr.pid)
	}
	slices.Sort(ids)
	now := strings.Join(ids, ",")
	was := base["pids"]
	env.set(base, "pids", now)
	if was == "" || was == now {
		return nil, nil
	}
	return []observation{{key: p.name, event: true,
		evidence: fmt.Sprintf("%s changed PID from %s to %s (%s)", p.name, was, now, procs[0].exe)}}, nil
}

// --- traffic ----------------------------------------------------------------

type trafficProbe struct{ cfg Traffic }

func (p *trafficProbe) interval() time.Duration { return time.Minute }

func (p *trafficProbe) scan(_ context.Context, env *scanEnv, base map[string]string) ([]observation, error) {
	read := func(name string) (uint64, error) {
		b, err := readSmall(env.path("/sys/class/net/"+p.cfg.Interface+"/statistics/"+name), 64)
		if err != nil {
			return 0, err
		}
		return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	rx, err := read("rx_bytes")
	if err != nil {
		return nil, fmt.Errorf("traffic: interface %s: %w", p.cfg.Interface, err)
	}
	tx, err := read("tx_bytes")
	if err != nil {
		return nil, fmt.Errorf("traffic: interface %s: %w", p.cfg.Interface, err)
	}
	window := p.cfg.Window
	if window == 0 {
		window = time.Hour
	}
	total := rx + tx
	start, _ := strconv.ParseInt(base["window_start"], 10, 64)
	startBytes, _ := strconv.ParseUint(base["window_bytes"], 10, 64)
	if base["window_start"] == "" || env.now.Sub(time.Unix(0, start)) >= window || total < startBytes {
		// A new window, or the counters were reset (reboot, driver reload).
		env.set(base, "window_start", strconv.FormatInt(env.now.UnixNano(), 10))
		env.set(base, "window_bytes", strconv.FormatUint(total, 10))
		start, startBytes = env.now.UnixNano(), total
	}
	if used := total - startBytes; used > p.cfg.MaxBytes {
		return []observation{{key: p.cfg.Interface + "@" + time.Unix(0, start).UTC().Format(time.RFC3339),
			evidence: fmt.Sprintf("%s moved %d bytes (in+out) since %s, over the %d allowed per %s",
				p.cfg.Interface, used, time.Unix(0, start).UTC().Format(time.RFC3339), p.cfg.MaxBytes, window)}}, nil
	}
	return nil, nil
}

// --- library injection -------------------------------------------------------

type injectionProbe struct{}

func (p *injectionProbe) interval() time.Duration { return 5 * time.Minute }

func (p *injectionProbe) scan(_ context.Context, env *scanEnv, _ map[string]string) ([]observation, error) {
	var obs []observation
	b, err := readSmall(env.path("/etc/ld.so.preload"), 4096)
	switch {
	case err == nil && len(strings.TrimSpace(string(b))) > 0:
		first, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		obs = append(obs, observation{key: "/etc/ld.so.preload", evidence: "/etc/ld.so.preload preloads " + first + " into every program"})
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("library injection: %w", err)
	}
	all, err := pids(env.root)
	if err != nil {
		return obs, fmt.Errorf("library injection: %w", err)
	}
	for _, pid := range all {
		environ, err := readSmall(filepath.Join(env.root, "proc", strconv.Itoa(pid), "environ"), 64<<10)
		if err != nil {
			continue // another user's process, or gone
		}
		if v, ok := environHas(environ, "LD_PRELOAD"); ok && v != "" {
			pr := readProcess(env.root, pid)
			obs = append(obs, observation{key: "LD_PRELOAD/" + strconv.Itoa(pid),
				evidence: fmt.Sprintf("%s started with LD_PRELOAD=%s", pr, v)})
		}
	}
	return obs, nil
}

func fileDigestOf(r io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
