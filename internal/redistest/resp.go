package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/realtime-message/presence/backend"
)

// doTimeout bounds one Do: dial, send, read.
const doTimeout = 10 * time.Second

// Do sends one command to the server and returns its reply; an error reply
// is returned as a reply of KindError, not as a failure. For a cluster it
// starts at the first node and follows MOVED redirections, so a keyed
// command reaches the node serving its key. A connection failure fails the
// test. Each call uses a new connection, so Do is safe for concurrent use
// and never disturbs the clients under test.
func (s *Server) Do(t testing.TB, args ...string) backend.Reply {
	t.Helper()
	return doFollow(t, s.Addr(), args)
}

// doFollow sends one command to addr, following up to 5 MOVED
// redirections; a connection failure fails the test.
func doFollow(t testing.TB, addr string, args []string) backend.Reply {
	t.Helper()
	for hop := 0; ; hop++ {
		r, err := doAddr(addr, doTimeout, args...)
		if err != nil {
			t.Fatalf("redistest: %s %v: %v", addr, args, err)
		}
		if hop < 5 && r.Kind == backend.KindError && backend.IsRedisError(r.Err, "MOVED") {
			// MOVED <slot> <host:port>
			if f := strings.Fields(r.Err.(*backend.RedisError).Msg); len(f) == 3 {
				addr = f[2]
				continue
			}
		}
		return r
	}
}

// DoNode sends one command to node i (Addrs[i]) and returns its reply,
// without following redirections.
func (s *Server) DoNode(t testing.TB, i int, args ...string) backend.Reply {
	t.Helper()
	r, err := doAddr(s.Addrs[i], doTimeout, args...)
	if err != nil {
		t.Fatalf("redistest: %s %v: %v", s.Addrs[i], args, err)
	}
	return r
}

// FlushScripts runs SCRIPT FLUSH on every node of s (every master of a
// cluster), so the next EVALSHA of any script gets NOSCRIPT.
func FlushScripts(t testing.TB, s *Server) {
	t.Helper()
	for i := range s.Addrs {
		if r := s.DoNode(t, i, "SCRIPT", "FLUSH"); r.Str != "OK" {
			t.Fatalf("redistest: SCRIPT FLUSH on %s: %v", s.Addrs[i], r)
		}
	}
}

// doAddr sends one command on a new connection to addr. The error is a
// transport or protocol error; a server error is a KindError reply.
func doAddr(addr string, timeout time.Duration, args ...string) (backend.Reply, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return backend.Reply{}, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return backend.Reply{}, err
	}
	if _, err := c.Write(encode(args)); err != nil {
		return backend.Reply{}, err
	}
	return readReply(bufio.NewReader(c))
}

// encode returns args as a RESP array of bulk strings.
func encode(args []string) []byte {
	b := make([]byte, 0, 16*len(args)+16)
	b = append(b, '*')
	b = strconv.AppendInt(b, int64(len(args)), 10)
	b = append(b, "\r\n"...)
	for _, a := range args {
		b = append(b, '$')
		b = strconv.AppendInt(b, int64(len(a)), 10)
		b = append(b, "\r\n"...)
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (backend.Reply, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return backend.Reply{}, err
	}
	if len(line) < 3 || !strings.HasSuffix(line, "\r\n") {
		return backend.Reply{}, fmt.Errorf("redistest: bad RESP line %q", line)
	}
	body := line[1 : len(line)-2]
	switch line[0] {
	case '+':
		return backend.StrReply(body), nil
	case '-':
		return backend.ErrReply(body), nil
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return backend.Reply{}, fmt.Errorf("redistest: bad integer %q", body)
		}
		return backend.IntReply(n), nil
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil {
			return backend.Reply{}, fmt.Errorf("redistest: bad bulk length %q", body)
		}
		if n < 0 {
			return backend.NilReply(), nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return backend.Reply{}, err
		}
		return backend.StrReply(string(buf[:n])), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil {
			return backend.Reply{}, fmt.Errorf("redistest: bad array length %q", body)
		}
		if n < 0 {
			return backend.NilReply(), nil
		}
		elems := make([]backend.Reply, n)
		for i := range elems {
			if elems[i], err = readReply(r); err != nil {
				return backend.Reply{}, err
			}
		}
		return backend.ArrReply(elems...), nil
	}
	return backend.Reply{}, fmt.Errorf("redistest: unsupported RESP type in %q", line)
}
