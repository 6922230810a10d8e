//go:build !linux

package sim

import "syscall"

// agentProcAttr puts an agent in a process group of its own (a power cut
// kills the group).
func agentProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
