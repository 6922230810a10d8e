// Package clientip tells who sent a request, for the limits the controller
// keeps per source.
//
// The source of a request is its TCP peer, unless that peer is a trusted
// proxy (Resolver.Trusted, set by `gitfleet serve --trusted-proxies`): then
// it is the address the proxy appended to X-Forwarded-For, read from the
// right and skipping further trusted proxies, so a client cannot choose its
// own address by sending the header itself. Without trusted proxies the
// header is never read.
//
// Limits count sources by Key: an IPv4 address, or the /64 an IPv6 address
// belongs to (the smallest block a host is usually given, so one host
// cannot dodge a limit by rotating addresses).
package clientip

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Resolver finds a request's source. The zero value trusts no proxy.
type Resolver struct {
	// Trusted are the proxies whose X-Forwarded-For is believed.
	Trusted []netip.Prefix
}

// ParseTrusted parses proxies given as addresses or CIDR prefixes
// ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32").
func ParseTrusted(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: not an address or CIDR prefix", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// IsTrusted reports whether a is a trusted proxy.
func (r Resolver) IsTrusted(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range r.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Addr returns the request's source address (invalid if RemoteAddr is not
// an address, as in some tests' requests).
func (r Resolver) Addr(req *http.Request) netip.Addr {
	peer := parse(req.RemoteAddr)
	if !peer.IsValid() || len(r.Trusted) == 0 || !r.IsTrusted(peer) {
		return peer
	}
	hops := forwarded(req.Header.Values("X-Forwarded-For"))
	for i := len(hops) - 1; i >= 0; i-- {
		a := parse(hops[i])
		if !a.IsValid() {
			return peer // a malformed hop: the last sure address
		}
		if !r.IsTrusted(a) {
			return a
		}
		peer = a
	}
	return peer
}

// Key is the request's source as limits count it (see the package doc).
func (r Resolver) Key(req *http.Request) string {
	if a := r.Addr(req); a.IsValid() {
		return KeyOf(a)
	}
	return req.RemoteAddr
}

// KeyOf groups an address as limits count it: IPv4 as is, IPv6 by /64.
func KeyOf(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// parse reads "host", "host:port" or "[v6]:port".
func parse(s string) netip.Addr {
	s = strings.TrimSpace(s)
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

// forwarded splits X-Forwarded-For headers into hops, first to last.
func forwarded(values []string) []string {
	var hops []string
	for _, v := range values {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hops = append(hops, h)
			}
		}
	}
	return hops
}
