// Package device is the parent of the code that runs on the device: the
// agent (device/agent), the bootloader environment (device/bootenv), A/B
// installs and update modules (device/install), monitoring (device/monitor)
// and the simulated device (device/sim).
//
// Nothing under device/ imports the controller, Redis or CUE: the agent
// stays a small static binary with the standard library and golang.org/x/sys.
package device
