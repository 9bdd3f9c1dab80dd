//go:build !linux

package bench

import (
	"errors"
)

// ProcessCPU needs /proc: Linux only.
func ProcessCPU(pid int) (float64, error) {
	return 0, errors.New("bench: process CPU needs /proc (Linux)")
}

// SystemBusy needs /proc: Linux only.
func SystemBusy() (float64, error) {
	return 0, errors.New("bench: machine CPU needs /proc (Linux)")
}
