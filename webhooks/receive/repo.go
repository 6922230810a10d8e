package receive

import "strings"

// repoInfo is how a payload names its repository: a full name and any URLs.
type repoInfo struct {
	FullName string
	URLs     []string
}

// repoMatcher matches payload repositories against Options.Repositories.
type repoMatcher struct {
	want []string // normalized
}

func newRepoMatcher(entries []string) repoMatcher {
	m := repoMatcher{}
	for _, e := range entries {
		m.want = append(m.want, normalizeRepo(e))
	}
	return m
}

// match reports whether info names a tracked repository. With nothing
// configured, everything matches. An entry matches when it equals the
// payload's full name, a payload URL without scheme, user, port and ".git"
// ("host/org/fleet"), or such a URL's path ("org/fleet"). Equality is exact
// after lowercasing, so "org/fleet" never matches "evil/org/fleet".
func (m repoMatcher) match(info repoInfo) bool {
	if len(m.want) == 0 {
		return true
	}
	var have []string
	if info.FullName != "" {
		have = append(have, normalizeRepo(info.FullName))
	}
	for _, u := range info.URLs {
		if u == "" {
			continue
		}
		n := normalizeRepo(u)
		have = append(have, n)
		if isURL(u) {
			if _, path, ok := strings.Cut(n, "/"); ok {
				have = append(have, path)
			}
		}
	}
	for _, w := range m.want {
		for _, h := range have {
			if w != "" && w == h {
				return true
			}
		}
	}
	return false
}

// isURL tells a URL ("https://…", "git@host:path") from a full name.
func isURL(s string) bool {
	return strings.Contains(s, "://") || strings.Contains(s, "@") || strings.Contains(s, ":")
}

// normalizeRepo reduces a URL to "host/path" and a full name to "path",
// lowercased, without ".git" or surrounding slashes.
func normalizeRepo(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	var host, path string
	switch {
	case strings.Contains(s, "://"):
		_, rest, _ := strings.Cut(s, "://")
		host, path, _ = strings.Cut(rest, "/")
		if i := strings.LastIndex(host, "@"); i >= 0 {
			host = host[i+1:]
		}
		if strings.HasPrefix(host, "[") { // [v6]:port
			if i := strings.Index(host, "]"); i >= 0 {
				host = host[:i+1]
			}
		} else if i := strings.Index(host, ":"); i >= 0 {
			host = host[:i]
		}
	case strings.Contains(s, ":"): // scp-like: [user@]host:path
		host, path, _ = strings.Cut(s, ":")
		if i := strings.LastIndex(host, "@"); i >= 0 {
			host = host[i+1:]
		}
	default:
		path = s
	}
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	path = strings.Trim(path, "/")
	path = strings.TrimSuffix(path, ".git")
	path = strings.Trim(path, "/")
	if host == "" {
		return path
	}
	return host + "/" + path
}
