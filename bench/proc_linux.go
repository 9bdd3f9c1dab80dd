package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcessCPU returns the user + system CPU time of process pid in seconds,
// from /proc/<pid>/stat (clock ticks of 1/100 s, as on every Linux we run).
func ProcessCPU(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it are
	// plain. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: unexpected /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: unexpected /proc/%d/stat", pid)
	}
	return (ut + st) / 100, nil
}

// SystemBusy returns the CPU time all processes of the machine have used,
// in seconds summed over CPUs (user, nice and system of /proc/stat's cpu
// line: process time, which is what /proc/<pid>/stat and INFO cpu count
// too). Beside the CPU of the processes a run measures, it tells how much
// the rest of the machine took meanwhile. Interrupt time is left out: on
// loopback most of it is the measured processes' own traffic.
func SystemBusy() (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("bench: unexpected /proc/stat")
	}
	var busy float64
	for _, i := range []int{1, 2, 3} { // user nice system
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc/stat: %w", err)
		}
		busy += v
	}
	return busy / 100, nil
}
