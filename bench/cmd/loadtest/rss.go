package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"strconv"
	"sync"
	"time"
)

// rssSampler follows the server's resident memory while the test runs: a
// peak between two reports would be missed by reading it only at the end.
type rssSampler struct {
	once        sync.Once
	quit, done  chan struct{}
	start, peak float64 // MB
}

func startRSS(pid int) *rssSampler {
	r := &rssSampler{quit: make(chan struct{}), done: make(chan struct{})}
	v, err := readRSS(pid)
	if pid <= 0 || err != nil {
		close(r.done)
		return r
	}
	r.start, r.peak = v, v
	go func() {
		defer close(r.done)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-r.quit:
				return
			case <-tick.C:
			}
			v, err := readRSS(pid)
			if err != nil {
				return // the server is gone
			}
			r.peak = max(r.peak, v)
		}
	}()
	return r
}

// stop ends the sampling (once; later calls only read) and returns the
// first sample and the highest, in MB; zeros without a server pid.
func (r *rssSampler) stop() (start, peak float64) {
	r.once.Do(func() { close(r.quit) })
	<-r.done
	return r.start, r.peak
}

// readRSS is VmRSS of /proc/<pid>/status, in MB.
func readRSS(pid int) (float64, error) {
	if pid <= 0 {
		return 0, errors.New("no pid")
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest) // "12345", "kB"
		if len(f) != 2 || string(f[1]) != "kB" {
			break
		}
		kb, err := strconv.ParseFloat(string(f[0]), 64)
		if err != nil {
			break
		}
		return kb / 1024, nil
	}
	return 0, errors.New("no VmRSS line in /proc/" + strconv.Itoa(pid) + "/status")
}
