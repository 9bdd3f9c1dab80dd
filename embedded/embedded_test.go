package embedded

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// call sends one command in RESP and returns the reply's first line, or for
// an array the first line of its elements, joined by spaces. Enough for the
// replies used here: +OK, :1, $-1, *2 of bulk strings.
func call(t *testing.T, c net.Conn, r *bufio.Reader, args ...string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	return readReply(t, r)
}

func readReply(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch line[0] {
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "(nil)"
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	case '*':
		n, _ := strconv.Atoi(line[1:])
		parts := make([]string, n)
		for i := range parts {
			parts[i] = readReply(t, r)
		}
		return strings.Join(parts, " ")
	}
	return line
}

func dial(t *testing.T, s *Server) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func TestKeysExpireInRealTime(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, r := dial(t, s)

	if got := call(t, c, r, "SET", "k", "v"); got != "+OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := call(t, c, r, "PEXPIRE", "k", "200"); got != ":1" {
		t.Fatalf("PEXPIRE: %q", got)
	}
	pttl, err := strconv.Atoi(strings.TrimPrefix(call(t, c, r, "PTTL", "k"), ":"))
	if err != nil || pttl <= 0 || pttl > 200 {
		t.Fatalf("PTTL right after PEXPIRE 200: %d, %v", pttl, err)
	}
	// Nobody calls FastForward: only the passing of real time may expire the
	// key. Poll rather than sleep a fixed time; the bound is generous.
	start := time.Now()
	for {
		if got := call(t, c, r, "EXISTS", "k"); got == ":0" {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatal("key with PEXPIRE 200 still exists after 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("expired after %v", time.Since(start))
	// A key without TTL stays.
	call(t, c, r, "SET", "stay", "v")
	time.Sleep(50 * time.Millisecond)
	if got := call(t, c, r, "GET", "stay"); got != "v" {
		t.Fatalf("GET stay: %q", got)
	}
}

func TestTimeIsWallClock(t *testing.T) {
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, r := dial(t, s)
	got := strings.Fields(call(t, c, r, "TIME"))
	if len(got) != 2 {
		t.Fatalf("TIME: %q", got)
	}
	sec, err := strconv.ParseInt(got[0], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(time.Unix(sec, 0)); d < -time.Minute || d > time.Minute {
		t.Fatalf("TIME is %v away from the wall clock", d)
	}
	// PEXPIREAT in the past expires at once, as on Redis.
	call(t, c, r, "SET", "k", "v")
	past := strconv.FormatInt(time.Now().Add(-time.Second).UnixMilli(), 10)
	call(t, c, r, "PEXPIREAT", "k", past)
	if got := call(t, c, r, "EXISTS", "k"); got != ":0" {
		t.Fatalf("key with PEXPIREAT in the past exists: %q", got)
	}
}

func TestStartAddr(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s, err := StartAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Addr() != addr {
		t.Fatalf("Addr() = %q, want %q", s.Addr(), addr)
	}
	if _, err := StartAddr(addr); err == nil {
		t.Fatal("second server on the same address started")
	}
}

func TestCloseLeavesNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	c, r := dial(t, s)
	if got := call(t, c, r, "PING"); got != "+PONG" {
		t.Fatalf("PING: %q", got)
	}
	s.Close()
	s.Close() // idempotent
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Fatal("server still accepts connections after Close")
	}
}
