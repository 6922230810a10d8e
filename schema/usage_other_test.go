//go:build !unix

package schema

import "testing"

type usage struct{}

func rusage() usage { return usage{} }

func reportUsage(b *testing.B, start usage) {}
