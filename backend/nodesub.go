package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Masters is what FollowMasters needs from an adapter to implement
// NodeSubscriber: how to list the masters and how to subscribe on one.
type Masters struct {
	// List returns the addresses of the current masters.
	List func(ctx context.Context) ([]string, error)
	// Subscribe subscribes on the master at addr and returns once it has
	// confirmed; the subscription reconnects on its own, as PSubscribe's
	// do. ctx bounds only the confirmation.
	Subscribe func(ctx context.Context, addr string) (Subscription, error)
	// Refresh is how often the masters are listed again; 0 never (a
	// standalone server).
	Refresh time.Duration
	Log     *slog.Logger
}

// FollowMasters subscribes on every master m lists and keeps doing so as
// the masters change, for adapters implementing NodeSubscriber. It
// returns once every master listed now has confirmed, or the first
// error (and then holds nothing).
func FollowMasters(ctx context.Context, m Masters) (Subscription, error) {
	if m.Log == nil {
		m.Log = slog.Default()
	}
	f := &followed{m: m, subs: map[string]Subscription{}, stop: make(chan struct{}), done: make(chan struct{})}
	addrs, err := m.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("backend: list masters: %w", err)
	}
	for _, addr := range addrs {
		sub, err := m.Subscribe(ctx, addr)
		if err != nil {
			f.closeAll()
			return nil, fmt.Errorf("backend: subscribe on master %s: %w", addr, err)
		}
		f.subs[addr] = sub
	}
	if m.Refresh <= 0 {
		close(f.done)
		return f, nil
	}
	go f.run()
	return f, nil
}

// followed is the subscription FollowMasters returns.
type followed struct {
	m Masters

	mu      sync.Mutex
	subs    map[string]Subscription
	missing map[string]error // masters listed but not subscribed, and why
	listErr error            // why the last listing failed, nil if it did not
	retired uint64           // Resubscribed of subscriptions already closed
	added   atomic.Uint64    // masters subscribed after the first listing

	once sync.Once
	stop chan struct{}
	done chan struct{}
}

func (f *followed) run() {
	defer close(f.done)
	t := time.NewTicker(f.m.Refresh)
	defer t.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-t.C:
		}
		f.refresh()
	}
}

// refresh lists the masters, subscribes on new ones and drops former ones.
func (f *followed) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), max(f.m.Refresh, 5*time.Second))
	defer cancel()
	go func() {
		select {
		case <-f.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	addrs, err := f.m.List(ctx)
	f.mu.Lock()
	f.listErr = err
	f.mu.Unlock()
	if err != nil {
		f.m.Log.Warn("backend: listing the masters failed; keeping the current subscriptions", "err", err)
		return
	}
	want := map[string]bool{}
	for _, a := range addrs {
		want[a] = true
	}
	var gone []Subscription
	f.mu.Lock()
	for addr, sub := range f.subs {
		if !want[addr] {
			delete(f.subs, addr)
			gone = append(gone, sub)
			if r, ok := sub.(Resubscriber); ok {
				f.retired += r.Resubscribed()
			}
			f.m.Log.Info("backend: dropping the subscription of a former master", "addr", addr)
		}
	}
	var todo []string
	for _, a := range addrs {
		if _, ok := f.subs[a]; !ok {
			todo = append(todo, a)
		}
	}
	f.missing = nil
	f.mu.Unlock()
	for _, sub := range gone {
		_ = sub.Close()
	}
	for _, addr := range todo {
		sub, err := f.m.Subscribe(ctx, addr)
		f.mu.Lock()
		if err != nil {
			if f.missing == nil {
				f.missing = map[string]error{}
			}
			f.missing[addr] = err
			f.mu.Unlock()
			f.m.Log.Warn("backend: cannot subscribe on a new master yet; retrying at the next refresh", "addr", addr, "err", err)
			continue
		}
		select {
		case <-f.stop:
			f.mu.Unlock()
			_ = sub.Close()
			return
		default:
		}
		f.subs[addr] = sub
		f.added.Add(1)
		f.mu.Unlock()
		f.m.Log.Info("backend: subscribed on a new master", "addr", addr)
	}
}

// Close stops following the topology and closes every node's
// subscription, waiting for their handlers. Idempotent.
func (f *followed) Close() error {
	f.once.Do(func() {
		close(f.stop)
		<-f.done
		f.closeAll()
	})
	return nil
}

func (f *followed) closeAll() {
	f.mu.Lock()
	subs := f.subs
	f.subs = map[string]Subscription{}
	f.mu.Unlock()
	for _, s := range subs {
		_ = s.Close()
	}
}

// Pattern returns the pattern of the node subscriptions.
func (f *followed) Pattern() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.subs {
		if st, ok := s.(SubscriptionState); ok {
			return st.Pattern()
		}
	}
	return ""
}

// Alive returns nil while every master is subscribed and connected.
func (f *followed) Alive() error {
	select {
	case <-f.stop:
		return errors.New("backend: subscription closed")
	default:
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs []error
	if f.listErr != nil {
		errs = append(errs, fmt.Errorf("listing the masters: %w", f.listErr))
	}
	addrs := make([]string, 0, len(f.subs))
	for a := range f.subs {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, a := range addrs {
		if st, ok := f.subs[a].(SubscriptionState); ok {
			if err := st.Alive(); err != nil {
				errs = append(errs, fmt.Errorf("master %s: %w", a, err))
			}
		}
	}
	for a, err := range f.missing {
		errs = append(errs, fmt.Errorf("master %s not subscribed: %w", a, err))
	}
	return errors.Join(errs...)
}

// Resubscribed counts the node subscriptions' reconnects and the masters
// subscribed after the first listing: either way events were missed.
func (f *followed) Resubscribed() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.retired + f.added.Load()
	for _, s := range f.subs {
		if r, ok := s.(Resubscriber); ok {
			n += r.Resubscribed()
		}
	}
	return n
}

var (
	_ SubscriptionState = (*followed)(nil)
	_ Resubscriber      = (*followed)(nil)
)
