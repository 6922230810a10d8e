package rollout

import "strings"

// CompareVersions orders two versions the way downgrade protection does.
// It returns -1, 0 or +1 as a is older than, the same as, or newer than b;
// ok is false when either is not a version, and then nothing is refused.
//
// A version is an optional "v", dot-separated release fields starting with
// a digit, an optional "-pre-release" and an optional "+build" (ignored):
// "2", "v1.10.3", "2.0.0-rc.1", "3.1+git42". Release fields compare as
// numbers when both are numeric (1.10 > 1.9) and otherwise as strings;
// missing fields count as 0 (1.2 == 1.2.0). A version with a pre-release
// is older than the same release without one (2.0.0-rc.1 < 2.0.0), and two
// pre-releases compare field by field the same way.
func CompareVersions(a, b string) (c int, ok bool) {
	ra, pa, ok1 := splitVersion(a)
	rb, pb, ok2 := splitVersion(b)
	if !ok1 || !ok2 {
		return 0, false
	}
	if c := compareFields(ra, rb); c != 0 {
		return c, true
	}
	switch {
	case pa == pb:
		return 0, true
	case pa == "":
		return 1, true
	case pb == "":
		return -1, true
	}
	return compareFields(pa, pb), true
}

func splitVersion(v string) (release, pre string, ok bool) {
	v = strings.TrimPrefix(v, "v")
	v, _, _ = strings.Cut(v, "+")
	release, pre, _ = strings.Cut(v, "-")
	if release == "" || release[0] < '0' || release[0] > '9' {
		return "", "", false
	}
	return release, pre, true
}

// compareFields compares dot-separated fields, numerically where both are
// numbers; a missing field is "0".
func compareFields(a, b string) int {
	for a != "" || b != "" {
		var fa, fb string
		fa, a, _ = strings.Cut(a, ".")
		fb, b, _ = strings.Cut(b, ".")
		if fa == "" {
			fa = "0"
		}
		if fb == "" {
			fb = "0"
		}
		if c := compareField(fa, fb); c != 0 {
			return c
		}
	}
	return 0
}

func compareField(a, b string) int {
	if numeric(a) && numeric(b) {
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(a, b)
}

func numeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
