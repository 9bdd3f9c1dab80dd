//go:build !unix

package bench

func selfCPU() float64 { return 0 }

// SelfCPU is this process's CPU time in seconds (0 where unknown).
func SelfCPU() float64 { return 0 }
