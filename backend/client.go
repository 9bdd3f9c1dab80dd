package backend

import (
	"context"
	"errors"
)

// ErrClosed is returned by every method of a Client after Close.
var ErrClosed = errors.New("backend: client is closed")

// ErrTxAborted reports that EXEC returned nil because a watched key changed
// between WATCH and EXEC. Nothing queued in the transaction was applied, so
// the caller may retry; it is distinct from every other error.
var ErrTxAborted = errors.New("backend: transaction aborted: a watched key changed")

// Pipeliner runs commands in one pipeline.
type Pipeliner interface {
	// Do sends cmds as one pipeline and returns one Reply per command, in
	// order. A command the server rejected has Reply.Err set; that is not an
	// error of Do. Do returns an error only when the replies could not be
	// obtained (connection failure, closed client, context done), and then
	// none of the replies are reliable: the commands may or may not have run.
	//
	// Commands of one pipeline may target different cluster slots; each
	// command's own keys must share one slot, or Do fails before sending
	// anything with an error wrapping ErrCrossSlot.
	//
	// Safe for concurrent use; concurrent pipelines are not ordered with
	// respect to each other.
	Do(ctx context.Context, cmds ...Cmd) ([]Reply, error)
}

// Tx reads on the dedicated connection of a transaction, after WATCH.
// It is valid only inside the TxFunc it was passed to and is not safe for
// concurrent use.
type Tx interface {
	Do(ctx context.Context, cmds ...Cmd) ([]Reply, error)
}

// TxFunc reads what it needs through tx and returns the commands to run
// atomically between MULTI and EXEC. Returning no commands ends the
// transaction without EXEC; returning an error ends it and Watch returns
// that error unchanged.
type TxFunc func(ctx context.Context, tx Tx) ([]Cmd, error)

// Transactor runs optimistic transactions.
type Transactor interface {
	// Watch runs WATCH keys, fn, then MULTI/EXEC of the commands fn
	// returned, all on one dedicated connection, so no other client's
	// command can slip between WATCH and EXEC on our side. It returns the
	// replies of the queued commands, or ErrTxAborted if a watched key
	// changed (nothing was applied), or another error. Watch does not retry:
	// retry policy belongs to the caller. All keys must share one cluster
	// slot.
	//
	// Safe for concurrent use: each call takes its own connection.
	Watch(ctx context.Context, keys []string, fn TxFunc) ([]Reply, error)
}

// Message is one pub/sub delivery.
type Message struct {
	Pattern string
	Channel string
	Payload string
}

// Handler receives messages of one subscription. Calls for one subscription
// are sequential, in delivery order, on a goroutine owned by the client; a
// slow handler delays later messages of that subscription only.
type Handler func(Message)

// Subscription is an active pattern subscription.
type Subscription interface {
	// Close unsubscribes and waits until the handler has returned for the
	// last time. Idempotent; safe to call from any goroutine except the
	// handler itself.
	Close() error
}

// PubSub publishes and pattern-subscribes. In a Redis Cluster a PUBLISH
// reaches subscribers on every node, so one subscription sees all channels.
type PubSub interface {
	// Publish sends payload on channel. Safe for concurrent use. Messages
	// one goroutine publishes on one channel arrive in order: on a cluster
	// adapters send PUBLISH to the node owning the channel name's slot, since
	// a random node would let a later message overtake an earlier one on
	// the cluster bus. (Events published by scripts and transactions come
	// from their keys' node, which is equally ordered.)
	Publish(ctx context.Context, channel, payload string) error
	// PSubscribe subscribes to pattern and returns once the server has
	// confirmed it, so a message published after PSubscribe returns is
	// delivered. Safe for concurrent use.
	PSubscribe(ctx context.Context, pattern string, h Handler) (Subscription, error)
}

// Client is everything a strategy needs from Redis. Implementations are
// safe for concurrent use by many goroutines.
type Client interface {
	Pipeliner
	Transactor
	PubSub
	// Close releases connections and stops subscriptions, waiting for their
	// handlers to return. It is idempotent; afterwards every method returns
	// ErrClosed.
	Close() error
}
