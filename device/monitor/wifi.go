package monitor

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The kernel shows wireless interfaces in /proc/net/wireless (and
// /sys/class/net/IF/wireless) but not their SSID: that is only offered over
// nl80211 netlink, or by wpa_supplicant. The wifi probe asks wpa_supplicant
// over its control socket (/run/wpa_supplicant/IF, the interface wpa_cli
// uses), which needs no tool; a device without wpa_supplicant gets a check
// error saying so.

type wifiProbe struct{ cfg Wifi }

func (p *wifiProbe) interval() time.Duration { return time.Minute }

func wirelessInterfaces(root string) ([]string, error) {
	f, err := os.Open(filepath.Join(root, "proc", "net", "wireless"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan(); i++ {
		if i < 2 {
			continue
		}
		name, _, ok := strings.Cut(sc.Text(), ":")
		if ok {
			out = append(out, strings.TrimSpace(name))
		}
	}
	return out, sc.Err()
}

func (p *wifiProbe) scan(ctx context.Context, env *scanEnv, base map[string]string) ([]observation, error) {
	ifaces, err := wirelessInterfaces(env.root)
	if err != nil {
		return nil, fmt.Errorf("wifi: no wireless extensions (/proc/net/wireless): %w", err)
	}
	iface := p.cfg.Interface
	switch {
	case iface == "" && len(ifaces) == 0:
		return nil, fmt.Errorf("wifi: no wireless interface in /proc/net/wireless")
	case iface == "":
		iface = ifaces[0]
	default:
		if _, err := os.Stat(env.path("/sys/class/net/" + iface)); err != nil {
			return nil, fmt.Errorf("wifi: interface %s: %w", iface, err)
		}
	}
	ssid, err := wpaSSID(ctx, env.root, iface)
	if err != nil {
		return nil, fmt.Errorf("wifi %s: SSID unknown: %w", iface, err)
	}
	if p.cfg.Expected != "" {
		if ssid != p.cfg.Expected {
			return []observation{{key: iface, evidence: fmt.Sprintf("%s is on SSID %q, expected %q", iface, ssid, p.cfg.Expected)}}, nil
		}
		return nil, nil
	}
	was, known := base["ssid"]
	env.set(base, "ssid", ssid)
	if !known || was == ssid {
		return nil, nil
	}
	return []observation{{key: iface, event: true, evidence: fmt.Sprintf("%s changed SSID from %q to %q", iface, was, ssid)}}, nil
}

// wpaSSID sends STATUS to wpa_supplicant's control socket for iface and
// returns the ssid it reports ("" when not associated).
func wpaSSID(ctx context.Context, root, iface string) (string, error) {
	var sock string
	for _, dir := range []string{"/run/wpa_supplicant", "/var/run/wpa_supplicant"} {
		if _, err := os.Stat(filepath.Join(root, dir, iface)); err == nil {
			sock = filepath.Join(root, dir, iface)
			break
		}
	}
	if sock == "" {
		return "", fmt.Errorf("no wpa_supplicant control socket /run/wpa_supplicant/%s (the kernel offers the SSID only over nl80211)", iface)
	}
	// The control protocol is datagrams; the reply goes to our own bound
	// socket, so bind one in a private temporary directory.
	dir, err := os.MkdirTemp("", "gitfleet-wpa-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	local := &net.UnixAddr{Name: filepath.Join(dir, "c"), Net: "unixgram"}
	conn, err := net.DialUnix("unixgram", local, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		return "", fmt.Errorf("wpa_supplicant control socket: %w", err)
	}
	defer conn.Close()
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	if _, err := conn.Write([]byte("STATUS")); err != nil {
		return "", fmt.Errorf("wpa_supplicant STATUS: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return "", fmt.Errorf("wpa_supplicant STATUS: %w", err)
		}
		if n > 0 && buf[0] == '<' {
			continue // an unsolicited event message
		}
		ssid, state := "", ""
		for _, line := range strings.Split(string(buf[:n]), "\n") {
			if v, ok := strings.CutPrefix(line, "ssid="); ok {
				ssid = v
			}
			if v, ok := strings.CutPrefix(line, "wpa_state="); ok {
				state = v
			}
		}
		if state != "COMPLETED" {
			return "", nil
		}
		return ssid, nil
	}
}
