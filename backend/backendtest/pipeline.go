package backendtest

import (
	"errors"
	"maps"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/internal/redistest"
)

// testPipelineReplies: one pipeline of commands of every reply type, on
// keys of different slots, with server errors in the middle. Each reply
// must be at its command's index with the right Kind; an error reply must
// not fail Do nor the commands after it.
func testPipelineReplies(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	k := thirds(p)
	s.checkSpread(t, k)
	str, cnt, h := k[0], k[1], k[2]
	z, missing := p+":z", p+":missing"

	cmds := []backend.Cmd{
		{Name: "PING"},                             // 0
		backend.K("SET", str, "v1"),                // 1
		backend.K("GET", str),                      // 2
		backend.K("GET", missing),                  // 3
		backend.K("INCR", cnt),                     // 4
		backend.K("INCR", str),                     // 5: ERR not an integer
		backend.K("INCRBY", cnt, "41"),             // 6
		backend.K("HSET", h, "f1", "a", "f2", "b"), // 7
		backend.K("HGETALL", h),                    // 8: a map under RESP3
		backend.K("HGET", str, "f"),                // 9: WRONGTYPE
		backend.K("ZADD", z, "1", "a", "2.5", "b"), // 10
		backend.K("ZRANGE", z, "0", "-1"),          // 11
		backend.K("ZSCORE", z, "b"),                // 12: a double under RESP3
		backend.K("EXISTS", str),                   // 13
		backend.K("DEL", cnt),                      // 14
		backend.K("EXISTS", cnt),                   // 15
		backend.K("GET", cnt),                      // 16
		backend.K("HGETALL", missing),              // 17: empty array (map)
		backend.K("SMEMBERS", missing),             // 18: empty array (set)
	}
	rs := do(t, c, cmds...)

	wantStr(t, "PING", rs[0], "PONG")
	wantStr(t, "SET", rs[1], "OK")
	wantStr(t, "GET", rs[2], "v1")
	wantNil(t, "GET missing", rs[3])
	if _, err := rs[3].AsString(); !errors.Is(err, backend.ErrNil) {
		t.Errorf("GET missing: AsString error %v, want ErrNil", err)
	}
	wantInt(t, "INCR", rs[4], 1)
	wantKind(t, "INCR of a string", rs[5], backend.KindError)
	if !backend.IsRedisError(rs[5].Error(), "ERR") {
		t.Errorf("INCR of a string: error %v, want a *backend.RedisError with code ERR", rs[5].Error())
	}
	wantInt(t, "INCRBY after an error", rs[6], 42)
	wantInt(t, "HSET", rs[7], 2)
	wantKind(t, "HGETALL", rs[8], backend.KindArray)
	if m, err := rs[8].AsStringMap(); err != nil || !maps.Equal(m, map[string]string{"f1": "a", "f2": "b"}) {
		t.Errorf("HGETALL: AsStringMap %v, %v", m, err)
	}
	if !backend.IsRedisError(rs[9].Error(), "WRONGTYPE") {
		t.Errorf("HGET of a string: %v, want WRONGTYPE", rs[9])
	}
	wantInt(t, "ZADD", rs[10], 2)
	if got, err := rs[11].AsStrings(); err != nil || !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("ZRANGE: AsStrings %q, %v", got, err)
	}
	wantKind(t, "ZSCORE", rs[12], backend.KindString)
	if f, err := strconv.ParseFloat(rs[12].Str, 64); err != nil || f != 2.5 {
		t.Errorf("ZSCORE: %v, want 2.5", rs[12])
	}
	wantInt(t, "EXISTS", rs[13], 1)
	wantInt(t, "DEL", rs[14], 1)
	wantInt(t, "EXISTS after DEL", rs[15], 0)
	wantNil(t, "GET after DEL", rs[16])
	for _, i := range []int{17, 18} {
		if a, err := rs[i].AsArray(); err != nil || len(a) != 0 {
			t.Errorf("%s: %v, want an empty array", cmds[i].Name, rs[i])
		}
	}
	if m, err := rs[17].AsStringMap(); err != nil || len(m) != 0 {
		t.Errorf("HGETALL missing: AsStringMap %v, %v", m, err)
	}

	// The commands around the errors were applied.
	rs = do(t, c, backend.K("GET", str), backend.K("HGET", h, "f2"))
	wantStr(t, "GET after the pipeline", rs[0], "v1")
	wantStr(t, "HGET after the pipeline", rs[1], "b")
	// What the adapter wrote is what a plain client reads.
	if r := s.srv.Do(t, "GET", str); r.Str != "v1" {
		t.Errorf("GET %s through redistest: %v", str, r)
	}
}

// testPipelineOrder: a pipeline of many commands over many slots (on a
// cluster, split over every node) comes back in command order.
func testPipelineOrder(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	const n = 300
	set := make([]backend.Cmd, n)
	get := make([]backend.Cmd, 2*n)
	keys := make([]string, n)
	for i := range n {
		keys[i] = p + ":" + strconv.Itoa(i)
		set[i] = backend.K("SET", keys[i], "v"+strconv.Itoa(i))
		get[2*i] = backend.K("GET", keys[i])
		get[2*i+1] = backend.K("STRLEN", keys[i])
	}
	s.checkSpread(t, keys)
	for i, r := range do(t, c, set...) {
		wantStr(t, "SET "+keys[i], r, "OK")
	}
	rs := do(t, c, get...)
	for i := range n {
		v := "v" + strconv.Itoa(i)
		wantStr(t, "GET "+keys[i], rs[2*i], v)
		wantInt(t, "STRLEN "+keys[i], rs[2*i+1], int64(len(v)))
	}
}

// testPipelineConcurrent: concurrent pipelines on one client each get
// their own replies.
func testPipelineConcurrent(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	cx := ctx(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 25 {
				k := p + ":" + strconv.Itoa(g) + ":" + strconv.Itoa(i)
				v := strconv.Itoa(g*1000 + i)
				rs, err := c.Do(cx, backend.K("SET", k, v), backend.K("GET", k), backend.K("INCR", k))
				if err != nil {
					t.Errorf("Do: %v", err)
					return
				}
				if len(rs) != 3 || rs[1].Str != v || rs[2].Int != int64(g*1000+i+1) {
					t.Errorf("goroutine %d got another's replies: %v", g, rs)
					return
				}
			}
		})
	}
	wg.Wait()
}

// testCrossSlot: a command whose keys span slots fails with ErrCrossSlot
// before anything of its pipeline is sent, on every kind of server, and
// does not panic (rueidis panics on such commands).
func testCrossSlot(t *testing.T, s *suite) {
	c := s.client(t)
	p := redistest.Prefix(t)
	k := thirds(p)
	a, b, marker := k[0], k[1], k[2]
	s.srv.Do(t, "SET", a, "x")

	_, err := c.Do(ctx(t), backend.C("DEL", []string{a, b}))
	wantErrIs(t, "DEL of keys of two slots", err, backend.ErrCrossSlot)

	_, err = c.Do(ctx(t), backend.K("SET", marker, "x"), backend.C("DEL", []string{a, b}))
	wantErrIs(t, "pipeline with a cross-slot DEL", err, backend.ErrCrossSlot)
	if r := s.srv.Do(t, "EXISTS", marker); r.Int != 0 {
		t.Error("a pipeline refused for a cross-slot command was partly sent")
	}
	if r := s.srv.Do(t, "EXISTS", a); r.Int != 1 {
		t.Error("the cross-slot DEL was sent")
	}

	_, err = c.Watch(ctx(t), []string{a, b}, mustNotCall(t, "Watch of keys of two slots"))
	wantErrIs(t, "Watch of keys of two slots", err, backend.ErrCrossSlot)

	_, err = backend.NewScripts(c).Run(ctx(t), backend.Eval{Script: incrScript(p), Keys: []string{a, b}, Args: []string{"1"}})
	wantErrIs(t, "script with keys of two slots", err, backend.ErrCrossSlot)

	// Keys sharing a hash tag are fine.
	x, y := tag(p, "x"), tag(p, "y")
	rs := do(t, c, backend.K("SET", x, "1"), backend.C("DEL", []string{x, y}))
	wantInt(t, "DEL of tagged keys", rs[1], 1)
}
