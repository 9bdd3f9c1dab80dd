package presence_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence"
	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/core"
	"github.com/realtime-message/presence/internal/redistest"
	"github.com/realtime-message/presence/luacall"
)

// The publishing side of the pub/sub modes (docs/DESIGN.md, pub/sub
// modes): each event kind goes out with the mode's command on the mode's
// channel, watched by raw subscribers that share no code with the
// service or the adapters.

// chanClient makes a client a backend.ChannelSubscriber, so New may
// choose or accept the channels and sharded modes with an adapter that
// does not subscribe to channels; only the publishing side runs here, so
// the stub is never called.
type chanClient struct{ backend.Client }

// classicOnly hides every optional capability of a client, among them
// backend.ChannelSubscriber: a backend that can only pattern-subscribe.
type classicOnly struct{ backend.Client }

func (chanClient) SubscribeChannels(context.Context, bool, backend.Handler) (backend.ChannelSubscription, error) {
	return nil, errors.New("chanClient: a stub, for the publishing side only")
}

// chanClusterClient is chanClient that also says whether it talks to a
// cluster, as auto asks.
type chanClusterClient struct {
	chanClient
	backend.MasterRunner
}

// withChannels returns c as a ChannelSubscriber: c itself when its
// adapter is one, else wrapped, keeping its MasterRunner.
func withChannels(c backend.Client) backend.Client {
	if _, ok := c.(backend.ChannelSubscriber); ok {
		return c
	}
	if mr, ok := c.(backend.MasterRunner); ok {
		return chanClusterClient{chanClient{c}, mr}
	}
	return chanClient{c}
}

// rawMsg is one message a raw subscriber received: kind is "pmessage"
// (classic, through a pattern) or "smessage" (sharded).
type rawMsg struct{ kind, channel, payload string }

// rawSub is a subscription on its own connection to one node, speaking
// RESP2 directly.
type rawSub struct {
	msgs chan rawMsg
}

// openRawSub sends cmd (PSUBSCRIBE or SSUBSCRIBE) with one channel or
// pattern to addr and returns once the server confirmed it.
func openRawSub(t *testing.T, addr, cmd, arg string) *rawSub {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := bufio.NewReader(c)
	fmt.Fprintf(c, "*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(cmd), cmd, len(arg), arg)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	conf, err := readStrings(r)
	if err != nil || len(conf) != 3 || !strings.EqualFold(conf[0], cmd) || conf[1] != arg {
		t.Fatalf("%s %s on %s: confirmation %q, %v", cmd, arg, addr, conf, err)
	}
	c.SetReadDeadline(time.Time{})
	s := &rawSub{msgs: make(chan rawMsg, 1024)}
	go func() {
		defer close(s.msgs)
		for {
			m, err := readStrings(r)
			if err != nil {
				return
			}
			switch {
			case len(m) == 4 && m[0] == "pmessage":
				s.msgs <- rawMsg{m[0], m[2], m[3]}
			case len(m) == 3 && m[0] == "smessage":
				s.msgs <- rawMsg{m[0], m[1], m[2]}
			}
		}
	}()
	return s
}

// readStrings reads one RESP2 reply made of bulk strings and integers, an
// array of them flattened.
func readStrings(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty RESP line")
	}
	switch line[0] {
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return nil, err
		}
		var out []string
		for range n {
			e, err := readStrings(r)
			if err != nil {
				return nil, err
			}
			out = append(out, e...)
		}
		return out, nil
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return nil, fmt.Errorf("bulk %q", line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		return []string{string(b[:n])}, nil
	case ':', '+':
		return []string{line[1:]}, nil
	}
	return nil, fmt.Errorf("RESP %q", line)
}

// until collects the messages of s up to and including the one whose
// payload is marker, which it leaves out.
func (s *rawSub) until(t *testing.T, marker string) []rawMsg {
	t.Helper()
	var got []rawMsg
	timeout := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-s.msgs:
			if !ok {
				t.Fatalf("subscription closed before %q; got %v", marker, got)
			}
			if m.payload == marker {
				return got
			}
			got = append(got, m)
		case <-timeout:
			t.Fatalf("no %q within 15s; got %v", marker, got)
		}
	}
}

// describe turns messages into "kind channel type" lines, sorted, where
// type is a presence or user event's type or a metadata event's
// "meta:operation".
func describe(t *testing.T, msgs []rawMsg) []string {
	t.Helper()
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		var ev struct {
			Type      string `json:"type"`
			Operation string `json:"operation"`
		}
		if err := json.Unmarshal([]byte(m.payload), &ev); err != nil {
			t.Fatalf("%s on %s: %q: %v", m.kind, m.channel, m.payload, err)
		}
		typ := ev.Type
		if ev.Operation != "" {
			typ = "meta:" + ev.Operation
		}
		out = append(out, m.kind+" "+m.channel+" "+typ)
	}
	slices.Sort(out)
	return out
}

// Every event kind goes out with the mode's command on the mode's
// channel: join, heartbeat update (lua, pipeline and batch strategies), leave,
// the reaper's leave, user online and offline, and metadata set through
// the lua and watch strategies. A classic subscriber to everything sees
// no room or user event in sharded mode, and a sharded subscriber sees
// nothing in the classic modes.
func TestEventsPublishedPerMode(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		modes := []string{presence.PubSubPattern, presence.PubSubChannels, presence.PubSubSharded}
		if tg.server.Embedded {
			modes = modes[:2] // no sharded pub/sub (TestShardedRefusedWithoutSPUBLISH)
		}
		for _, mode := range modes {
			t.Run(mode, func(t *testing.T) { checkPublished(t, tg, mode) })
		}
	})
}

func checkPublished(t *testing.T, tg target, mode string) {
	ctx := ctxT(t)
	srv := tg.server
	clk := newFakeClock()
	prefix := redistest.Prefix(t)
	cfg := presence.Config{PubSub: mode, KeyPrefix: prefix, Now: clk.Now, TTL: 10 * time.Second}
	client := withChannels(tg.connect(t))
	a := newService(t, client, cfg)
	cfg.Heartbeat, cfg.Metadata = "pipeline", "watch"
	b := newService(t, client, cfg)
	cfg.Heartbeat = "batch?window=1ms"
	batched := newService(t, client, cfg)
	if a.PubSub() != mode || b.PubSub() != mode || batched.PubSub() != mode {
		t.Fatalf("PubSub() %q, %q, %q, want %q", a.PubSub(), b.PubSub(), batched.PubSub(), mode)
	}
	k := a.Keys()
	room, ch := "r1", presence.Channel{Type: "doc", Name: "r1"}
	roomCh, u1Ch, u2Ch := k.RoomEvents(room), k.UserEvents("u1"), k.UserEvents("u2")
	metaCh := k.RoomMetaEvents(ch.Name)
	if mode == presence.PubSubPattern {
		metaCh = k.MetaEvents(ch.Type, ch.Name)
	}
	if got := a.MetadataEventsChannel(ch); got != metaCh {
		t.Fatalf("MetadataEventsChannel %q, want %q", got, metaCh)
	}

	// Classic PUBLISH reaches every node of a cluster: one pattern
	// subscription on the first node sees all of it. Sharded messages
	// reach only the subscribers on the channel's shard.
	classic := openRawSub(t, srv.Addr(), "PSUBSCRIBE", prefix+":*")
	sharded := map[string]*rawSub{}
	if !srv.Embedded {
		for _, c := range []string{roomCh, u1Ch, u2Ch} {
			sharded[c] = openRawSub(t, srv.Addrs[srv.NodeForSlot(backend.KeySlot(c))], "SSUBSCRIBE", c)
		}
	}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := a.Join(ctx, room, "c1", "u1", json.RawMessage(`{"a":1}`))
	must(err)
	_, err = a.Heartbeat(ctx, room, "c1", presence.HeartbeatParams{PatchState: json.RawMessage(`{"a":2}`)})
	must(err)
	_, err = b.Heartbeat(ctx, room, "c1", presence.HeartbeatParams{PatchState: json.RawMessage(`{"a":3}`)})
	must(err)
	_, err = batched.Heartbeat(ctx, room, "c1", presence.HeartbeatParams{PatchState: json.RawMessage(`{"a":4}`)})
	must(err)
	must(a.Leave(ctx, room, "c1"))
	_, err = a.Join(ctx, room, "c2", "u2", nil)
	must(err)
	// c2's hash expires (as its TTL would) and the clock passes the
	// lookback: the reaper removes it.
	_, err = client.Do(ctx, backend.K("DEL", k.Conn(room, "c2")))
	must(err)
	clk.Advance(time.Minute)
	n, err := a.Reap(ctx)
	must(err)
	if n != 1 {
		t.Fatalf("reaped %d, want 1", n)
	}
	_, err = a.SetMetadata(ctx, ch, []presence.Item{{Key: "k", Value: `"lua"`}}, presence.MetadataOptions{})
	must(err)
	_, err = b.SetMetadata(ctx, ch, []presence.Item{{Key: "k", Value: `"watch"`}}, presence.MetadataOptions{})
	must(err)

	// A marker published on every node after the events arrives after
	// every classic event published from that node, so what the
	// subscriber collected up to the last marker is all it will get.
	var gotClassic []rawMsg
	for i := range srv.Addrs {
		marker := "marker-" + strconv.Itoa(i)
		if r := srv.DoNode(t, i, "PUBLISH", prefix+":marker", marker); r.Kind == backend.KindError {
			t.Fatal(r.Err)
		}
		gotClassic = append(gotClassic, classic.until(t, marker)...)
	}
	var gotSharded []rawMsg
	for c, sub := range sharded {
		if r := srv.Do(t, "SPUBLISH", c, "marker"); r.Kind == backend.KindError {
			t.Fatal(r.Err)
		}
		gotSharded = append(gotSharded, sub.until(t, "marker")...)
	}

	// The events of rooms and users, by channel, in the mode's kind.
	roomKind := "pmessage"
	if mode == presence.PubSubSharded {
		roomKind = "smessage"
	}
	var roomEvents []rawMsg
	add := func(c string, types ...string) {
		for _, typ := range types {
			roomEvents = append(roomEvents, rawMsg{roomKind, c, `{"type":"` + typ + `"}`})
		}
	}
	add(roomCh, "join", "update", "update", "update", "leave", "join", "leave")
	add(u1Ch, "online", "offline")
	add(u2Ch, "online", "offline")
	meta := []rawMsg{
		{"pmessage", metaCh, `{"operation":"set"}`},
		{"pmessage", metaCh, `{"operation":"set"}`},
	}
	wantClassic, wantSharded := meta, []rawMsg(nil)
	if mode == presence.PubSubSharded {
		wantSharded = roomEvents
	} else {
		wantClassic = append(wantClassic, roomEvents...)
	}
	if got, want := describe(t, gotClassic), describe(t, wantClassic); !slices.Equal(got, want) {
		t.Errorf("classic subscriber got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
	if got, want := describe(t, gotSharded), describe(t, wantSharded); !slices.Equal(got, want) {
		t.Errorf("sharded subscribers got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// keyState is what keys hold, type by type, to tell that a call wrote
// nothing.
func keyState(t *testing.T, c backend.Client, keys ...string) string {
	t.Helper()
	ctx := ctxT(t)
	var b strings.Builder
	for _, key := range keys {
		r, err := c.Do(ctx, backend.K("TYPE", key), backend.K("PTTL", key))
		if err != nil {
			t.Fatal(err)
		}
		typ := r[0].Str
		read := map[string]backend.Cmd{
			"string": backend.K("GET", key),
			"hash":   backend.K("HGETALL", key),
			"set":    backend.K("SMEMBERS", key),
			"zset":   backend.K("ZRANGE", key, "0", "-1", "WITHSCORES"),
		}
		fmt.Fprintf(&b, "%s %s ttl:%v", key, typ, r[1].Int > 0)
		if cmd, ok := read[typ]; ok {
			v, err := c.Do(ctx, cmd)
			if err != nil {
				t.Fatal(err)
			}
			elems := []string{v[0].Str}
			for _, e := range v[0].Elems {
				elems = append(elems, e.Str)
			}
			if typ == "set" || typ == "hash" {
				slices.Sort(elems) // their order is not theirs to keep
			}
			fmt.Fprintf(&b, " %q", elems)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// A script given anything but PUBLISH or SPUBLISH as its publish command
// refuses before writing anything: the command is run as given, so EVAL
// or an empty string must never reach redis.call, and an error raised
// after the writes would leave them in place. The embedded server has no
// SPUBLISH: there, SPUBLISH is refused the same way.
func TestScriptsRefuseBadPublishCommand(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		ctx := ctxT(t)
		c := tg.connect(t)
		clk := newFakeClock()
		s := newService(t, c, presence.Config{PubSub: presence.PubSubPattern, Now: clk.Now})
		scripts := backend.NewScripts(c)
		k := s.Keys()
		room := "r"
		if _, err := s.Join(ctx, room, "c", "u", json.RawMessage(`{"a":1}`)); err != nil {
			t.Fatal(err)
		}
		roomKeys := []string{k.Conns(room), k.Members(room), k.LastSeen(room), k.ConnMeta(room), k.UserConns(room), k.Gone(room), k.Seq(room), k.Conn(room, "c"), k.Conn(room, "c2")}
		bad := []string{"EVAL", "", "publish", "SUBSCRIBE"}
		if tg.server.Embedded {
			bad = append(bad, "SPUBLISH")
		}
		now := strconv.FormatInt(clk.Now().UnixMilli()+time.Hour.Milliseconds(), 10)
		for _, pub := range bad {
			calls := map[string]struct {
				run  func() error
				keys []string
			}{
				// A fresh conn: join would add it everywhere.
				"join": {func() error {
					_, err := joinCall(k, room, "c2", "u2", now, pub).Run(ctx, scripts)
					return err
				}, roomKeys},
				// A changed state: heartbeat would write it and publish.
				"heartbeat": {func() error {
					_, err := heartbeatCall(k, room, "c", now, pub).Run(ctx, scripts)
					return err
				}, roomKeys},
				"leave": {func() error {
					_, err := leaveCall(k, room, "c", now, pub).Run(ctx, scripts)
					return err
				}, roomKeys},
				// The conn's hash is deleted below, so reap would remove it.
				"reap": {func() error {
					_, err := reapCall(k, room, now, pub).Run(ctx, scripts)
					return err
				}, roomKeys},
				"user_add": {func() error {
					_, err := userAddCall(k, "u2", room, "c2", now, pub).Run(ctx, scripts)
					return err
				}, []string{k.UserIndex("u2")}},
				// u's only entry: user_remove would empty the index.
				"user_remove": {func() error {
					_, err := userRemoveCall(k, "u", room, "c", now, pub).Run(ctx, scripts)
					return err
				}, []string{k.UserIndex("u")}},
			}
			for name, call := range calls {
				before := keyState(t, c, call.keys...)
				if name == "reap" {
					// Only for reap: its precondition is an expired hash.
					if _, err := c.Do(ctx, backend.K("RENAME", k.Conn(room, "c"), k.Conn(room, "c")+":kept")); err != nil {
						t.Fatal(err)
					}
				}
				err := call.run()
				if name == "reap" {
					if _, err := c.Do(ctx, backend.K("RENAME", k.Conn(room, "c")+":kept", k.Conn(room, "c"))); err != nil {
						t.Fatal(err)
					}
				}
				if !backend.IsRedisError(err, "BAD_PUBLISH") {
					t.Errorf("%s with pub %q: err %v, want BAD_PUBLISH", name, pub, err)
				}
				if after := keyState(t, c, call.keys...); after != before {
					t.Errorf("%s with pub %q wrote:\nbefore\n%safter\n%s", name, pub, before, after)
				}
			}
		}
		// The service's own calls still work: the state above is whole.
		if _, err := s.Heartbeat(ctx, room, "c", presence.HeartbeatParams{PatchState: json.RawMessage(`{"a":2}`)}); err != nil {
			t.Fatal(err)
		}
	})
}

// The embedded server has no sharded pub/sub: forcing it fails New,
// before any join could fail.
func TestShardedRefusedWithoutSPUBLISH(t *testing.T) {
	c := connectBackend(t, "rueidis", redistest.Embedded(t))
	_, err := presence.New(withChannels(c), presence.Config{PubSub: presence.PubSubSharded, KeyPrefix: redistest.Prefix(t), ReaperInterval: -1})
	if !errors.Is(err, presence.ErrInvalidArgument) || !strings.Contains(err.Error(), "SPUBLISH") {
		t.Fatalf("New with PubSub sharded on the embedded server: %v, want ErrInvalidArgument naming SPUBLISH", err)
	}
}

// auto picks pattern for a backend that cannot subscribe to channels,
// channels on a standalone or embedded server, sharded on a Redis 7
// cluster; forcing channels or sharded on a backend that cannot
// subscribe to them is refused.
func TestPubSubAuto(t *testing.T) {
	forEachTarget(t, func(t *testing.T, tg target) {
		c := tg.connect(t)
		plain := classicOnly{c}
		want := presence.PubSubChannels
		if tg.server.Cluster {
			want = presence.PubSubSharded
		}
		for _, tc := range []struct {
			client backend.Client
			mode   string
			want   string
		}{
			{plain, presence.PubSubAuto, presence.PubSubPattern},
			{plain, "", presence.PubSubPattern},
			{plain, presence.PubSubPattern, presence.PubSubPattern},
			{withChannels(c), presence.PubSubAuto, want},
			{withChannels(c), presence.PubSubPattern, presence.PubSubPattern},
			{withChannels(c), presence.PubSubChannels, presence.PubSubChannels},
		} {
			s := newService(t, tc.client, presence.Config{PubSub: tc.mode})
			if got := s.PubSub(); got != tc.want {
				t.Errorf("%T with PubSub %q: %q, want %q", tc.client, tc.mode, got, tc.want)
			}
		}
		for _, mode := range []string{presence.PubSubChannels, presence.PubSubSharded} {
			_, err := presence.New(plain, presence.Config{PubSub: mode, KeyPrefix: redistest.Prefix(t), ReaperInterval: -1})
			if !errors.Is(err, presence.ErrInvalidArgument) || !strings.Contains(err.Error(), "ChannelSubscriber") {
				t.Errorf("PubSub %q without ChannelSubscriber: %v, want ErrInvalidArgument naming ChannelSubscriber", mode, err)
			}
		}
		_, err := presence.New(plain, presence.Config{PubSub: "spublish", ReaperInterval: -1})
		if !errors.Is(err, presence.ErrInvalidArgument) {
			t.Errorf("PubSub %q: %v, want ErrInvalidArgument", "spublish", err)
		}
	})
}

// The script calls as the service builds them, but with pub as given.

func joinCall(k core.Keys, room, conn, user, now, pub string) luacall.Join {
	return luacall.Join{
		Conns: k.Conns(room), Members: k.Members(room), LastSeen: k.LastSeen(room), ConnMeta: k.ConnMeta(room),
		UserConns: k.UserConns(room), Gone: k.Gone(room), ConnHash: k.Conn(room, conn), Seq: k.Seq(room),
		Conn: conn, User: user, Room: room, NowMs: now, TTLMs: "60000", Events: k.RoomEvents(room),
		ConnPrefix: k.ConnPrefix(room), Pub: pub,
	}
}

func heartbeatCall(k core.Keys, room, conn, now, pub string) luacall.Heartbeat {
	return luacall.Heartbeat{
		ConnHash: k.Conn(room, conn), LastSeen: k.LastSeen(room), ConnMeta: k.ConnMeta(room), Seq: k.Seq(room),
		Conn: conn, NowMs: now, TTLMs: "60000", Events: k.RoomEvents(room), Room: room, Pub: pub,
		Patch: []luacall.KeyValue{{Key: "a", Value: "5"}},
	}
}

func leaveCall(k core.Keys, room, conn, now, pub string) luacall.Leave {
	return luacall.Leave{
		Conns: k.Conns(room), Members: k.Members(room), LastSeen: k.LastSeen(room), ConnMeta: k.ConnMeta(room),
		UserConns: k.UserConns(room), Gone: k.Gone(room), ConnHash: k.Conn(room, conn), Seq: k.Seq(room),
		Conn: conn, Room: room, NowMs: now, Events: k.RoomEvents(room), LookbackMs: "10000", Pub: pub,
	}
}

func reapCall(k core.Keys, room, now, pub string) luacall.Reap {
	return luacall.Reap{
		Conns: k.Conns(room), Members: k.Members(room), LastSeen: k.LastSeen(room), ConnMeta: k.ConnMeta(room),
		UserConns: k.UserConns(room), Gone: k.Gone(room), Seq: k.Seq(room),
		Room: room, NowMs: now, CutoffMs: now, Events: k.RoomEvents(room), ConnPrefix: k.ConnPrefix(room),
		Limit: "100", Pub: pub,
	}
}

func userAddCall(k core.Keys, user, room, conn, now, pub string) luacall.UserAdd {
	return luacall.UserAdd{
		Index: k.UserIndex(user), Entry: core.UserEntry(room, conn), Epoch: "1", User: user, NowMs: now,
		Events: k.UserEvents(user), Pub: pub,
	}
}

func userRemoveCall(k core.Keys, user, room, conn, now, pub string) luacall.UserRemove {
	return luacall.UserRemove{
		Index: k.UserIndex(user), User: user, NowMs: now, Events: k.UserEvents(user), Pub: pub,
		Entries: []luacall.EntryEpoch{{Entry: core.UserEntry(room, conn), Epoch: "9007199254740991"}},
	}
}
