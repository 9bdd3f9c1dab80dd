//go:build !unix

package bench

func selfCPU() float64 { return 0 }
