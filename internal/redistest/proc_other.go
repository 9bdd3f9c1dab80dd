//go:build !linux

package redistest

import "os/exec"

// setDeathSignal does nothing outside Linux: a test binary that dies
// without running Main's cleanup may leave its servers running.
func setDeathSignal(*exec.Cmd) {}
