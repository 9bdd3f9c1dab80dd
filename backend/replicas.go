package backend

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Redis replicates asynchronously: a master acknowledges a write before
// any replica has it, and a failover to a replica that had not received
// it yet loses the write for good, although the client was told it
// succeeded. WAIT numreplicas timeout, sent after the write on the same
// connection, blocks until that many replicas have acknowledged every
// write the connection made so far (or the timeout passes) and returns how
// many did. It narrows the window; it does not make Redis strongly
// consistent (a failover may still pick the one replica that had not
// acknowledged, when fewer replicas than numreplicas per master exist).

// ReplicaWait is how many replicas must acknowledge a write, and how long
// to wait for them.
type ReplicaWait struct {
	// Replicas is WAIT's numreplicas: at least 1.
	Replicas int
	// Timeout is WAIT's timeout: above 0 (WAIT 0 would block forever),
	// rounded up to whole milliseconds.
	Timeout time.Duration
	// Wrote, when set, tells whether a command wrote anything, from its
	// reply: a script that refuses a request with an ordinary reply (no
	// error) wrote nothing, and its refusal then stands whatever WAIT
	// says. Nil: every command that did not fail wrote.
	Wrote func(cmd Cmd, reply Reply) bool
}

// Check reports a ReplicaWait WAIT cannot run.
func (w ReplicaWait) Check() error {
	if w.Replicas < 1 {
		return fmt.Errorf("backend: ReplicaWait.Replicas %d: want at least 1", w.Replicas)
	}
	if w.Timeout <= 0 {
		return fmt.Errorf("backend: ReplicaWait.Timeout %v: want above 0 (WAIT with 0 blocks forever)", w.Timeout)
	}
	return nil
}

// Cmd returns the WAIT command.
func (w ReplicaWait) Cmd() Cmd {
	ms := (w.Timeout + time.Millisecond - 1) / time.Millisecond
	return Cmd{Name: "WAIT", Args: []string{strconv.Itoa(w.Replicas), strconv.FormatInt(int64(ms), 10)}}
}

// ErrNotReplicated reports a write that ran on the master but that fewer
// replicas than required acknowledged in time: it is applied and visible
// now, and may be lost if the master fails before a replica receives it.
// Match it with errors.Is; the error is a *NotReplicatedError.
var ErrNotReplicated = errors.New("backend: write not acknowledged by enough replicas")

// NotReplicatedError is ErrNotReplicated with the figures.
type NotReplicatedError struct {
	Want, Got int
	Timeout   time.Duration
	// Err is WAIT's own error reply, when it failed (e.g. the node became a
	// replica meanwhile), instead of a count.
	Err error
}

func (e *NotReplicatedError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%v: WAIT %d failed: %v; the write ran on the master and may be lost on a failover", ErrNotReplicated, e.Want, e.Err)
	}
	return fmt.Sprintf("%v: %d of %d replicas within %v; the write ran on the master and may be lost on a failover", ErrNotReplicated, e.Got, e.Want, e.Timeout)
}

func (e *NotReplicatedError) Unwrap() error { return ErrNotReplicated }

// CheckWait judges WAIT's reply r after cmds, whose replies are replies:
// when none of them wrote (an error reply, or Wrote says so) there is
// nothing to replicate and the replies stand; otherwise fewer replicas
// than w.Replicas is a *NotReplicatedError.
func (w ReplicaWait) CheckWait(cmds []Cmd, replies []Reply, r Reply) error {
	wrote := false
	for i, rep := range replies {
		if rep.Err == nil && (w.Wrote == nil || w.Wrote(cmds[i], rep)) {
			wrote = true
		}
	}
	if !wrote {
		return nil
	}
	if r.Err != nil {
		return &NotReplicatedError{Want: w.Replicas, Timeout: w.Timeout, Err: r.Err}
	}
	n, err := r.AsInt()
	if err != nil {
		return &NotReplicatedError{Want: w.Replicas, Timeout: w.Timeout, Err: fmt.Errorf("WAIT replied %v", r)}
	}
	if n < int64(w.Replicas) {
		return &NotReplicatedError{Want: w.Replicas, Got: int(n), Timeout: w.Timeout}
	}
	return nil
}

// ReplicaWaiter is an adapter that can make writes wait for replicas.
// Both of this module's adapters implement it.
type ReplicaWaiter interface {
	// WaitingReplicas returns a Client on the same connections and
	// subscriptions whose Do, after a pipeline with keyed commands, and
	// whose Watch, after EXEC, send w's WAIT on the very connection the
	// commands ran on (WAIT counts that connection's writes), and fail with
	// a *NotReplicatedError, in place of the replies, when fewer replicas
	// acknowledged. On a cluster the keyed commands of one Do must share a
	// slot. Reads through a Watch's Tx do not wait. Close of the returned
	// Client does nothing: the receiver owns the connections.
	WaitingReplicas(w ReplicaWait) (Client, error)
}

// Borrowed is a Client on another Client's connections, for views such as
// WaitingReplicas's: its Close does nothing, since the owner closes them.
type Borrowed struct{ Client }

// Close does nothing.
func (Borrowed) Close() error { return nil }
