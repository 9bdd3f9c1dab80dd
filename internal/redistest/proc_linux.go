package redistest

import (
	"os/exec"
	"syscall"
)

// setDeathSignal has the kernel kill redis-server when the test binary
// dies without running Main's cleanup (a panic, a timeout, SIGKILL), so no
// server outlives its tests.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
