package rueidis

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/redis/rueidis"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luasrc"
)

// LoadScripts loads scripts with SCRIPT LOAD on every node the client
// knows (in a cluster every master and every replica, so a failover finds
// them cached too), in parallel, one pipeline per node. It fails if a node
// is unreachable, a script does not compile, or Redis computes a SHA1 other
// than the generated one (a stale generated file). Script caches vanish on
// restart, failover and SCRIPT FLUSH, so EVALSHA callers must keep their
// NOSCRIPT fallback (backend.Scripts does).
func (c *Client) LoadScripts(ctx context.Context, scripts ...*luasrc.Script) error {
	if c.closed.Load() {
		return backend.ErrClosed
	}
	if len(scripts) == 0 {
		return nil
	}
	nodes := c.rc.Nodes()
	addrs := make([]string, 0, len(nodes))
	for addr := range nodes {
		addrs = append(addrs, addr)
	}
	sort.Strings(addrs)
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.preloadNode(ctx, nodes[addr], scripts); err != nil {
				errs[i] = fmt.Errorf("node %s: %w", addr, err)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("backend/rueidis: preload scripts: %w", err)
	}
	return nil
}

func (c *Client) preloadNode(ctx context.Context, node rueidis.Client, scripts []*luasrc.Script) error {
	cmds := make([]rueidis.Completed, len(scripts))
	for i, s := range scripts {
		cmds[i] = node.B().ScriptLoad().Script(s.Source).Build()
	}
	results := node.DoMulti(ctx, cmds...)
	var errs []error
	for i, r := range results {
		if err := r.NonRedisError(); err != nil {
			return c.wrapErr(ctx, err)
		}
		m, _ := r.ToMessage()
		rep := toReply(&m)
		sha, err := rep.AsString()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("script %s: %w", scripts[i].Name, err))
		case sha != scripts[i].SHA1:
			errs = append(errs, fmt.Errorf("script %s: Redis computed SHA1 %s, the generated file says %s (run go generate ./luasrc)", scripts[i].Name, sha, scripts[i].SHA1))
		}
	}
	return errors.Join(errs...)
}
