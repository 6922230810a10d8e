package remote

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// switchesFS reports whether file transfer takes the configured user's
// filesystem identity: User names another user than root and the agent
// runs as root (otherwise it works with the agent's own rights, which are
// then the user's, or root's when User is empty).
func (c *Client) switchesFS() bool {
	return c.asRoot && c.opts.User != "" && c.uid != 0
}

// asUser runs f with the configured user's filesystem identity (fsuid,
// fsgid and supplementary groups): the kernel checks the files f opens,
// creates, renames and changes against that user's permissions, and files
// it creates belong to them. f runs on an OS thread of its own whose
// credentials change; the thread is never returned to the runtime (the
// goroutine ends locked to it, which ends the thread), so no other code
// runs with them. A descriptor f opens keeps its access afterwards.
func (c *Client) asUser(f func() error) error {
	if !c.switchesFS() {
		return f()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		gids := make([]int, 0, len(c.groups)+1)
		gids = append(gids, int(c.gid))
		for _, g := range c.groups {
			gids = append(gids, int(g))
		}
		// Per thread: x/sys's setgroups and setfs[ug]id are the raw
		// system calls, unlike syscall.Setgroups.
		if err := unix.Setgroups(gids); err != nil {
			errc <- fmt.Errorf("cannot take the groups of user %s: %w", c.userName, err)
			return
		}
		_ = unix.Setfsgid(int(c.gid))
		_ = unix.Setfsuid(int(c.uid))
		// setfs[ug]id report no failure: read them back (-1 changes
		// nothing and returns the current value).
		gid, _ := unix.SetfsgidRetGid(-1)
		uid, _ := unix.SetfsuidRetUid(-1)
		if uid != int(c.uid) || gid != int(c.gid) {
			errc <- fmt.Errorf("cannot take the identity of user %s (fsuid %d, fsgid %d)", c.userName, uid, gid)
			return
		}
		errc <- f()
	}()
	return <-errc
}
