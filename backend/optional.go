package backend

import "context"

// Optional capabilities of an adapter, beyond Client. Both of this
// module's adapters implement them; the service and the server check for
// them with a type assertion, so a third-party adapter without them still
// works (with a single PING for health, and no reconnect counts).

// MasterRunner is a client that can address each master of a cluster.
type MasterRunner interface {
	// Cluster reports whether the client talks to a Redis Cluster.
	Cluster() bool
	// EachMaster sends cmds as one pipeline to every master and calls fn
	// with each one's replies or error.
	EachMaster(ctx context.Context, cmds []Cmd, fn func(addr string, replies []Reply, err error)) error
}

// SubscriptionState is a subscription that can say whether it is
// connected.
type SubscriptionState interface {
	Pattern() string
	// Alive returns nil while the subscription is connected and subscribed,
	// else why not.
	Alive() error
}

// Resubscriber is a subscription that counts its reconnects: events
// published while it was down are lost, so a caller resynchronises when
// the count changes.
type Resubscriber interface {
	// Resubscribed counts how often the subscription was confirmed again
	// after losing its connection.
	Resubscribed() uint64
}

// NodeSubscriber is a client that can subscribe on each master separately.
// PUBLISH reaches the subscribers of every node of a cluster, but keyspace
// notifications are node-local: only the node whose key expired publishes
// its event, to its own clients. A keyspace-notification subscriber needs a
// subscription on every master, and one on each new master after a
// failover or a reshard.
type NodeSubscriber interface {
	// PSubscribeEachMaster subscribes to pattern on every master (the one
	// server when standalone) and returns once each master listed at the
	// call has confirmed. It then follows the topology until closed: it
	// lists the masters again periodically, subscribes on a new one and
	// drops the subscription of a node that is no longer a master. h may
	// be called concurrently for messages of different masters; calls for
	// one master are sequential. The subscription implements
	// SubscriptionState and Resubscriber; Resubscribed also counts masters
	// subscribed after the first listing, since their earlier events were
	// never received.
	PSubscribeEachMaster(ctx context.Context, pattern string, h Handler) (Subscription, error)
}

// ChannelSubscriber is a client that subscribes to exact channels, added
// and removed one by one on a long-lived subscription: a server node
// follows only the rooms it has sockets in (SUBSCRIBE per room) instead of
// every room (PSUBSCRIBE). With sharded true it uses sharded pub/sub
// (SSUBSCRIBE, Redis 7+): on a cluster each channel is subscribed on the
// master owning its slot, so an SPUBLISH touches only that shard.
type ChannelSubscriber interface {
	// SubscribeChannels opens a subscription with no channels yet. h may
	// be called concurrently for messages of different channels; calls
	// for one channel are sequential, in delivery order. Message.Pattern
	// is empty.
	SubscribeChannels(ctx context.Context, sharded bool, h Handler) (ChannelSubscription, error)
}

// ChannelSubscription is the subscription SubscribeChannels returns. It
// implements SubscriptionState (Pattern returns "") and Resubscriber.
//
// It keeps its channels subscribed on its own: after a lost connection it
// subscribes them again, and with sharded pub/sub it follows a channel
// whose slot moved to another master (the server pushes SUNSUBSCRIBE when
// a slot migrates or its master fails over) by subscribing it on the new
// owner. Either way messages published meanwhile are lost, so each such
// event counts in Resubscribed.
type ChannelSubscription interface {
	Subscription
	// Add subscribes to channels and returns once the server confirmed
	// every one of them, so a message published after Add returns is
	// delivered. Adding a channel already subscribed is a no-op. On error
	// some of the channels may be subscribed; Remove them or Add again.
	Add(ctx context.Context, channels ...string) error
	// Remove unsubscribes from channels. Messages of a removed channel
	// may still reach the handler until Remove returns, none after.
	// Removing a channel not subscribed is a no-op.
	Remove(ctx context.Context, channels ...string) error
	// Channels counts the channels subscribed (added and not removed).
	Channels() int
}
