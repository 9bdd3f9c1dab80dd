// Command presence-bench reproduces the seed's heartbeat and metadata
// tables for every strategy on both backends, and adds what they hide:
// round trips per operation, lost updates, and the distance to the ceiling
// (heartbeat.lua driven as raw pipelined EVALSHA with no service logic).
//
//	go run ./bench/cmd/presence-bench                 # full run, about 6 minutes
//	go run ./bench/cmd/presence-bench -quick          # under a minute
//	go run ./bench/cmd/presence-bench -json           # one JSON object per row
//	go run ./bench/cmd/presence-bench -out tables.md -svg bench/heartbeat.svg
//	go run ./bench/cmd/presence-bench -reaper         # reaper modes only, about 10 minutes
//	go run ./bench/cmd/presence-bench -user-index-only # the user index's cost alone
//	go run ./bench/cmd/presence-bench -scaleout        # pub/sub modes on a 3-master cluster, 4 nodes (docs/SCALING.md)
//	go run ./bench/cmd/presence-bench -redis-delay 250us -ceiling=false -strategies "" -user-index-pairs 0 -metadata lua,watch
//	                                                  # metadata CAS at a 0.5 ms RTT (a same-datacenter network)
//
// It starts its own redis-server (from PATH, in a private temporary
// directory, on a free 127.0.0.1 port, killed at exit) unless REDIS_URL
// names one: a redis:// URL or host:port. Nothing it writes there outlives
// the run (every scenario uses keys under a prefix of its own and removes
// them). With -redis-delay the clients reach that server through a proxy on
// 127.0.0.1 that holds every chunk for the delay in each direction
// (bench.DelayProxy); the CPU probe still talks to the server directly.
// Progress goes to stderr; tables (or JSON) to stdout.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/realtime-message/presence/bench"
	"github.com/realtime-message/presence/internal/redistest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "presence-bench:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("presence-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "short scenarios: finishes within 60 s")
	asJSON := fs.Bool("json", false, "print one JSON object per row instead of Markdown tables")
	backends := fs.String("backends", "rueidis,goredis", "comma-separated backends")
	strategies := fs.String("strategies", "lua,pipeline,batch", "comma-separated heartbeat strategy specs")
	meta := fs.String("metadata", "lua,watch,app-cas", "comma-separated metadata strategy specs (app-cas: the seed's application-level CAS, bench only)")
	writers := fs.Int("writers", 20, "metadata writers")
	metaRetry := fs.String("meta-retry", bench.RetryBackoff, "comma-separated metadata writer policies after a conflict, each run for every strategy: backoff (presence.ConflictBackoff), immediate")
	delay := fs.Duration("redis-delay", 0, "reach Redis through a proxy on 127.0.0.1 that holds every chunk this long in each direction (e.g. 100us, 250us: a same-datacenter RTT of 0.2–0.5 ms); 0: no proxy")
	ceiling := fs.Bool("ceiling", true, "measure the heartbeat ceiling (false: skip it, e.g. for metadata-only runs)")
	conc := fs.String("concurrency", "16,64,256,1024", "comma-separated saturation concurrencies")
	out := fs.String("out", "", "also write the Markdown tables to this file")
	svg := fs.String("svg", "", "write the heartbeat chart (SVG) to this file")
	patch := fs.Bool("patch", false, "every heartbeat changes its connection's state (takes a seq, publishes an update event)")
	scale := fs.Float64("scale", 1, "multiply every scenario's duration (for smoke tests)")
	render := fs.String("render", "", "measure nothing: read the rows of an earlier -json run from this file and write its tables and -svg chart")
	title := fs.String("title", "", "the chart's title (default: says the machine)")
	reaper := fs.Bool("reaper", false, "measure the reaper modes (sweep, notify) instead: a dead node's leave latency, and Redis CPU with idle and expiring conns")
	scaleout := fs.Bool("scaleout", false, "measure the pub/sub modes instead (pattern, channels, sharded): 4 server nodes on a 3-master cluster it starts (REDIS_URL: a cluster's masters, comma-separated), each serving its own rooms; events received per node and per master")
	ss := bench.DefaultScaleScenario()
	fs.StringVar(&ss.Backend, "scaleout-backend", ss.Backend, "with -scaleout: the backend")
	fs.IntVar(&ss.Rooms, "scaleout-rooms", ss.Rooms, "with -scaleout: rooms (room i on node i mod 4)")
	fs.IntVar(&ss.Receive, "scaleout-receive", ss.Receive, "with -scaleout: messages redis-benchmark publishes to measure the CPU per message received (0: skip)")
	rs := bench.DefaultReaperScenario()
	fs.StringVar(&rs.Backend, "reaper-backend", rs.Backend, "with -reaper: the backend")
	fs.IntVar(&rs.IdleConns, "reaper-conns", rs.IdleConns, "with -reaper: idle conns")
	fs.IntVar(&rs.IdleRooms, "reaper-rooms", rs.IdleRooms, "with -reaper: rooms of the idle conns")
	fs.DurationVar(&rs.Window, "reaper-window", rs.Window, "with -reaper: the idle window measured")
	fs.DurationVar(&rs.JoinTimeout, "reaper-join-timeout", rs.JoinTimeout, "with -reaper: bound of joining the idle conns (fewer are measured if it ends first)")
	uiPairs := fs.Int("user-index-pairs", -1, "turns each side (user index off, on) takes in the user index cost rows (default 80, -quick 10; 0 skips them)")
	uiConns := fs.Int("user-index-conns", 64, "concurrency of the user index cost rows")
	uiOnly := fs.Bool("user-index-only", false, "measure only the user index cost (issue 14): heartbeat and join+leave, the index off and on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	if *render != "" {
		return renderRows(*render, *svg, *title, stdout)
	}

	o := bench.DefaultOptions()
	if *quick {
		o = bench.QuickOptions()
	}
	o = o.Scale(*scale)
	o.Backends = split(*backends)
	o.Strategies = split(*strategies)
	o.Patch = *patch
	o.MetaStrategies = split(*meta)
	o.MetaWriters = *writers
	if *uiPairs >= 0 {
		o.UserIndexPairs = *uiPairs
	}
	if *uiConns <= 0 {
		return fmt.Errorf("-user-index-conns: %d is not a positive integer", *uiConns)
	}
	o.UserIndexConns, o.UserIndexOnly = *uiConns, *uiOnly
	if o.UserIndexOnly && o.UserIndexPairs == 0 {
		return errors.New("-user-index-only with -user-index-pairs 0 measures nothing")
	}
	o.MetaRetry = split(*metaRetry)
	for _, r := range o.MetaRetry {
		if r != bench.RetryBackoff && r != bench.RetryImmediate {
			return fmt.Errorf("-meta-retry: unknown policy %q (%s, %s)", r, bench.RetryBackoff, bench.RetryImmediate)
		}
	}
	if !*ceiling {
		o.CeilingConcurrency, o.CeilingBatch = nil, 0
	}
	o.Concurrency = nil
	for _, s := range split(*conc) {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n <= 0 {
			return fmt.Errorf("-concurrency: %q is not a positive integer", s)
		}
		o.Concurrency = append(o.Concurrency, n)
	}
	for _, b := range o.Backends {
		if b != "rueidis" && b != "goredis" {
			return fmt.Errorf("-backends: unknown backend %q (rueidis, goredis)", b)
		}
	}
	o.Progress = stderr

	if *scaleout {
		return runScaleout(ctx, ss, *asJSON, *out, args, stdout, stderr)
	}
	if u := os.Getenv("REDIS_URL"); u != "" {
		o.Target = bench.TargetFromEnv(u)
		fmt.Fprintf(stderr, "using REDIS_URL %s\n", o.Target)
	} else {
		srv, err := redistest.StartStandalone()
		if err != nil {
			return err
		}
		defer srv.Stop()
		o.Target = bench.Target{Addrs: srv.Addrs}
		fmt.Fprintf(stderr, "started redis-server pid %d on %s\n", srv.Pid(), srv.Addr())
	}
	if *delay < 0 {
		return fmt.Errorf("-redis-delay: %v is negative", *delay)
	}
	if *delay > 0 {
		if *reaper {
			return errors.New("-redis-delay applies to the library tables, not to -reaper")
		}
		if o.Target.URL != "" {
			return errors.New("-redis-delay needs REDIS_URL as host:port, not a URL")
		}
		p, err := bench.StartDelayProxy(o.Target.Addrs[0], *delay)
		if err != nil {
			return err
		}
		defer p.Close()
		o.Target = bench.Target{Addrs: []string{p.Addr()}, Direct: o.Target.Addrs[0]}
		o.RedisDelay = *delay
		fmt.Fprintf(stderr, "clients reach Redis through %s, %v added each way\n", p.Addr(), *delay)
	}
	if *reaper {
		rs.Progress = stderr
		fmt.Fprintf(stderr, "load average %s\n", bench.LoadAvg())
		rows, err := bench.RunReaper(ctx, o.Target, rs)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			for _, r := range rows {
				if err := enc.Encode(r); err != nil {
					return err
				}
			}
		} else {
			bench.WriteReaperTable(stdout, rs, rows)
		}
		if *out != "" {
			f, err := os.Create(*out)
			if err != nil {
				return err
			}
			fmt.Fprintf(f, "Command: `go run ./bench/cmd/presence-bench %s`\n\n", strings.Join(args, " "))
			bench.WriteReaperTable(f, rs, rows)
			return f.Close()
		}
		return nil
	}
	fmt.Fprintf(stderr, "load average %s; about %v of scenarios\n", bench.LoadAvg(), o.Estimate().Round(time.Second))

	res, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := bench.WriteJSON(stdout, res.Rows); err != nil {
			return err
		}
	} else {
		res.WriteMarkdown(stdout)
	}
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		fmt.Fprintf(f, "Command: `go run ./bench/cmd/presence-bench %s`\n\n", strings.Join(args, " "))
		res.WriteMarkdown(f)
		if err := f.Close(); err != nil {
			return err
		}
	}
	if *svg != "" {
		f, err := os.Create(*svg)
		if err != nil {
			return err
		}
		t := *title
		if t == "" {
			t = fmt.Sprintf("presence heartbeat strategies, %d CPUs, Redis %s on loopback", res.Env.NumCPU, res.Env.RedisVersion)
		}
		if err := bench.WriteSVG(f, res.Rows, res.Ceiling, t); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// renderRows writes the tables and the chart of rows saved with -json.
func renderRows(path, svg, title string, stdout io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var rows []bench.Row
	dec := json.NewDecoder(f)
	for {
		var r bench.Row
		if err := dec.Decode(&r); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rows = append(rows, r)
	}
	ceiling := bench.Ceiling(rows)
	bench.WriteSeedTable(stdout, rows)
	fmt.Fprintln(stdout)
	bench.WriteHeartbeatTable(stdout, rows)
	fmt.Fprintln(stdout)
	bench.WriteMetadataTable(stdout, rows)
	fmt.Fprintln(stdout)
	bench.WriteUserIndexTable(stdout, rows)
	if svg == "" {
		return nil
	}
	out, err := os.Create(svg)
	if err != nil {
		return err
	}
	if title == "" {
		title = "presence heartbeat strategies (rendered from " + filepath.Base(path) + ")"
	}
	if err := bench.WriteSVG(out, rows, ceiling, title); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// runScaleout runs the pub/sub modes' scenario on a cluster: REDIS_URL's
// masters, or a 3-master cluster it starts.
func runScaleout(ctx context.Context, ss bench.ScaleScenario, asJSON bool, out string, args []string, stdout, stderr io.Writer) error {
	var target bench.Target
	if u := os.Getenv("REDIS_URL"); u != "" {
		target = bench.TargetFromEnv(u)
		fmt.Fprintf(stderr, "using REDIS_URL %s (every master of a cluster)\n", target)
	} else {
		srv, err := redistest.StartCluster()
		if err != nil {
			return err
		}
		defer srv.Stop()
		target = bench.Target{Addrs: srv.Addrs}
		fmt.Fprintf(stderr, "started a 3-master cluster on %s\n", strings.Join(srv.Addrs, ","))
	}
	ss.Progress = stderr
	fmt.Fprintf(stderr, "load average %s\n", bench.LoadAvg())
	rows, err := bench.RunScale(ctx, target, ss)
	if err != nil {
		return err
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
	} else {
		bench.WriteScaleTable(stdout, ss, rows)
	}
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		fmt.Fprintf(f, "Command: `go run ./bench/cmd/presence-bench %s`\n\n", strings.Join(args, " "))
		bench.WriteScaleTable(f, ss, rows)
		return f.Close()
	}
	return nil
}
