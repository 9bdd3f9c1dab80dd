package bench

import (
	"os/exec"
	"syscall"
)

// setDeathSignal has the kernel kill redis-server if this process dies
// without stopping it, so no server outlives a crashed or killed run.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
