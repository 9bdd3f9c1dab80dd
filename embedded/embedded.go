// Package embedded runs an in-process Redis for development and for the
// server's default configuration, so the presence service starts without a
// Redis to install.
//
// It wraps miniredis (github.com/alicebob/miniredis/v2), a Redis written in
// Go that speaks RESP on a real TCP socket, so the same adapters that talk
// to a real Redis talk to it unchanged. It is not a production store: data
// lives in this process's memory only, it is not replicated, and it
// implements only the commands miniredis knows.
//
// miniredis, unlike Redis, does not let keys expire as time passes unless it
// is told to; presence is built on TTLs, so a Server switches on miniredis's
// clock-driven TTLs (ClockTTL). Each command then first advances every TTL by
// the wall-clock time elapsed since the previous command and drops the keys
// whose TTL ran out, so a key with PEXPIRE 200 is gone for every client 200ms
// later, as on Redis. TIME, EXPIREAT and PEXPIREAT follow the same wall clock.
package embedded

import (
	"fmt"
	"sync"

	"github.com/alicebob/miniredis/v2"
)

// Server is a running in-process Redis. Its methods are safe for concurrent
// use.
type Server struct {
	m         *miniredis.Miniredis
	addr      string
	closeOnce sync.Once
}

// Start starts a server on a random free port of 127.0.0.1. Loopback only:
// the embedded Redis has no authentication and must not be reachable from
// other hosts.
func Start() (*Server, error) {
	return StartAddr("127.0.0.1:0")
}

// StartAddr starts a server listening on addr, e.g. "127.0.0.1:6379"; a
// zero port picks a free one (see Addr).
func StartAddr(addr string) (*Server, error) {
	m := miniredis.NewMiniRedis()
	// Expire keys as wall-clock time passes, on every command, instead of
	// only when FastForward is called: see the package comment. Without
	// SetTime the clock is time.Now, so TIME is the real time too.
	m.ClockTTL(true)
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("embedded: listen on %s: %w", addr, err)
	}
	return &Server{m: m, addr: m.Addr()}, nil
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// URL returns the server's redis:// URL, for presence.Config.RedisURL or
// REDIS_URL. The adapters recognise the embedded server by what it
// answers (it lacks client-side caching and cluster support), so it needs
// no setting of its own.
func (s *Server) URL() string { return "redis://" + s.addr }

// Close stops the server: it closes the listener and every client
// connection and waits for their goroutines. Data is lost. Close is
// idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(s.m.Close)
}
