package redistest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// startTimeout bounds how long a redis-server may take to answer PING.
const startTimeout = 10 * time.Second

// proc is one redis-server process.
type proc struct {
	cmd  *exec.Cmd
	addr string
	dir  string
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // Wait's result, valid after done
}

// freePort returns a TCP port of 127.0.0.1 free at the time of the call.
// Another process may take it before redis-server binds it; startRedis
// retries then.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRedis starts redis-server in dir with the config lines extra added
// by conf (called with the chosen port, to add e.g. the cluster bus port),
// and waits until it answers PING. It picks a free port and retries with
// another when the port was taken meanwhile.
func startRedis(dir string, conf func() ([]string, error)) (*proc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var p *proc
		p, err = startRedisOnce(dir, conf)
		if err == nil {
			return p, nil
		}
		if !strings.Contains(err.Error(), "in use") {
			break
		}
	}
	return nil, err
}

func startRedisOnce(dir string, conf func() ([]string, error)) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	extra, err := conf()
	if err != nil {
		return nil, err
	}
	lines := []string{
		"bind 127.0.0.1",
		"port " + strconv.Itoa(port),
		`save ""`,
		"appendonly no",
		"dir " + strconv.Quote(dir),
		`logfile ""`, // stdout, which goes to redis.log
		"daemonize no",
		"enable-debug-command yes",
	}
	lines = append(lines, extra...)
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "redis.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command("redis-server", confPath)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("redistest: start redis-server: %w", err)
	}
	p := &proc{cmd: cmd, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: dir, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := p.waitReady(); err != nil {
		p.stop()
		return nil, fmt.Errorf("redistest: redis-server on %s: %w\n--- %s ---\n%s", p.addr, err, logPath, tail(logPath))
	}
	return p, nil
}

// waitReady polls PING until the server answers PONG, the process exits or
// startTimeout passes.
func (p *proc) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.err)
		default:
		}
		// The answer must come from our process: two servers started at
		// once can be handed the same free port, and the one that lost
		// the bind would otherwise take the winner's answer for its own.
		r, err := doAddr(p.addr, time.Second, "INFO", "server")
		if err == nil {
			if strings.Contains(r.Str, "\nprocess_id:"+strconv.Itoa(p.cmd.Process.Pid)+"\r") {
				return nil
			}
			err = fmt.Errorf("%s answers, but not as process %d", p.addr, p.cmd.Process.Pid)
		}
		last = err
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("no PONG within %v: %v", startTimeout, last)
}

// stop kills the process and reaps it, so no zombie is left.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return nil // exited by itself; reaped already
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("redis-server pid %d did not exit after SIGKILL", p.cmd.Process.Pid)
	}
}

// tail returns the end of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	const max = 4 << 10
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

func startStandalone(dir string) (*Server, error) {
	p, err := startRedis(dir, func() ([]string, error) { return nil, nil })
	if err != nil {
		return nil, err
	}
	return &Server{
		Name:  KindStandalone.String(),
		Kind:  KindStandalone,
		Addrs: []string{p.addr},
		procs: []*proc{p},
		dir:   dir,
	}, nil
}
