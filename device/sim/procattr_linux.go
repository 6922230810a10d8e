package sim

import "syscall"

// agentProcAttr puts an agent in a process group of its own (a power cut
// kills the group) and kills it when the process that runs the simulated
// devices dies without stopping them (killed by a signal it cannot
// handle), so no agent outlives its simulator.
func agentProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
