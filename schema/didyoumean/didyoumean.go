// Package didyoumean suggests the name a mistyped one was probably meant
// to be: the manifest loader for fields and references, gitfleet serve
// and the agent for unknown configuration keys. It imports nothing of
// Gitfleet's (the device agent uses it).
//
// The distance is hand-written rather than taken from a Levenshtein
// library because it counts a swap of adjacent letters as one edit
// (optimal string alignment): "brnach" is one edit from "branch".
package didyoumean

import "strings"

// Closest returns the candidate closest to s (case-insensitively), if it
// is close enough to be a likely typo — one edit for short names, a third
// of the length for longer ones — or "".
func Closest(s string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		if strings.EqualFold(c, s) {
			return c
		}
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	// Allow one edit for short names, more for longer ones.
	limit := max(1, min(len(s), len(best))/3)
	if bestDist < 0 || bestDist > limit {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of adjacent bytes each
// count as one edit.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		// Names are short; bound the work for hostile input.
		if a == b {
			return 0
		}
		return max(len(a), len(b))
	}
	// d[i][j] is the distance between a[:i] and b[:j].
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
