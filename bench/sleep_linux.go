package bench

import (
	"runtime"
	"syscall"
	"time"
)

// prSetTimerSlack is prctl(2)'s PR_SET_TIMERSLACK.
const prSetTimerSlack = 29

// lockThread gives the calling goroutine an OS thread of its own with a
// timer slack of 1 µs (the default, 50 µs, is a fifth of the delays the
// proxy adds). The goroutine never unlocks, so the thread ends with it and
// no other goroutine runs with the changed slack.
func lockThread() {
	runtime.LockOSThread()
	syscall.RawSyscall(syscall.SYS_PRCTL, prSetTimerSlack, 1000, 0)
}

// sleepPrecise sleeps d in nanosleep(2), which the kernel's high-resolution
// timers end within the thread's slack, where time.Sleep ends on the
// runtime poller's millisecond.
func sleepPrecise(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for {
		var rem syscall.Timespec
		if err := syscall.Nanosleep(&ts, &rem); err != syscall.EINTR {
			return
		}
		ts = rem
	}
}
