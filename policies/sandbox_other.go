//go:build !linux

package policies

import "syscall"

// childAttr: outside Linux the child is not tied to its parent's life;
// the parent still kills it when its time budget runs out.
func childAttr() *syscall.SysProcAttr { return nil }

// limitSelf: outside Linux only the time budget (enforced by the parent)
// and the Go memory limit apply.
func limitSelf() {}
