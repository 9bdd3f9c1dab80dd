// Command presence-server is the presence and channel-metadata server:
// Socket.IO v4 at /socket.io/ (the protocol of the original Node.js server,
// so socket.io-client 4.x SDKs work unchanged), backed by Redis.
//
//	go run ./cmd/presence-server
//
// With no configuration it listens on :3000 with an embedded in-process
// Redis (its first log line says so); REDIS_URL selects a real Redis
// (standalone URL, or cluster seeds). GET /healthz reports whether every
// Redis master answers, a cluster is ok and the event subscriptions are
// connected; GET /metrics serves Prometheus metrics. SIGINT or SIGTERM shuts
// it down gracefully: every local socket leaves presence, so other nodes
// see it go. Run with -h for every setting.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// startupTimeout bounds connecting to Redis and subscribing.
const startupTimeout = 30 * time.Second

func run(args []string, stdout, stderr io.Writer) int {
	s, err := loadSettings(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "presence-server:", err)
		return 2
	}
	if s.HashPassword {
		return hashPassword(os.Stdin, stdout, stderr)
	}
	if s.SignToken != "" {
		if s.AuthSecret == "" {
			fmt.Fprintln(stderr, "presence-server: -sign-token needs PRESENCE_AUTH_SECRET")
			return 2
		}
		tok, err := s.authenticator().Sign(s.SignToken, s.TokenTTL)
		if err != nil {
			fmt.Fprintln(stderr, "presence-server:", err)
			return 2
		}
		fmt.Fprintln(stdout, tok)
		return 0
	}
	log := newLogger(s, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	initCtx, cancel := context.WithTimeout(ctx, startupTimeout)
	app, cleanup, err := initApp(initCtx, s, log)
	cancel()
	if err != nil {
		log.Error("startup failed", "err", err)
		return 1
	}
	defer cleanup()
	// Every node of a deployment must publish and subscribe alike: the
	// resolved mode is logged so a mixed rollout shows in the logs.
	log.Info("pub/sub mode "+app.Service.PubSub(), "pubsub", app.Service.PubSub(), "configured", app.Service.Config().PubSub)
	if err := app.Run(ctx, nil); err != nil {
		log.Error("server failed", "err", err)
		return 1
	}
	return 0
}
