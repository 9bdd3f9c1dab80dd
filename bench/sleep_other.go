//go:build !linux

package bench

import "time"

func lockThread() {}

// sleepPrecise is time.Sleep where nanosleep(2) with a set timer slack is
// not at hand: the proxy's delays are then only as fine as the runtime's
// timers.
func sleepPrecise(d time.Duration) { time.Sleep(d) }
