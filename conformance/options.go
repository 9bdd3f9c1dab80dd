package conformance

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// Options are the suite's budgets and scope. Zero fields take defaults.
// The budgets can also be raised without editing code: a command-line
// flag (go test ./... -args -conformance.duration=1m, or directly
// go test -conformance.duration=1m in one package) wins over the
// environment variable, which wins over the field, which wins over the
// default. The sequential properties follow rapid's own flags:
// -rapid.checks (default 100 cases) and -rapid.steps (default 30 actions
// per case), or RAPID_CHECKS and RAPID_STEPS.
type Options struct {
	// Heartbeats and Metadatas list the strategies to check, by name or
	// full spec ("batch?window=5ms"). Nil means every registered strategy
	// (strategy.Heartbeats.Names(), strategy.Metadatas.Names()); an empty,
	// non-nil slice checks none of that kind.
	Heartbeats []string
	Metadatas  []string

	// Specs maps a strategy name to the spec used to build it, for
	// strategies whose defaults do not suit a test. Default: DefaultSpecs;
	// names in neither map are used as they are.
	Specs map[string]string

	// Properties restricts the properties checked (PropFencing, PropCAS,
	// PropSequential, PropLinearizable, PropUsers, PropSeq, PropReaper).
	// Default: all.
	Properties []string

	// Clients is the number of concurrent client goroutines of the
	// linearizability checks and of the concurrent parts of fencing and
	// cas. Default 8; -conformance.clients, CONFORMANCE_CLIENTS.
	Clients int

	// Nodes is how many Services, each on its own client from
	// Target.NewClient, the concurrent clients are spread over, as server
	// nodes sharing one Redis would be. Default 2; -conformance.nodes,
	// CONFORMANCE_NODES.
	Nodes int

	// Duration bounds the recording of one linearizability history.
	// Default 1s: enough for thousands of operations on a loopback Redis,
	// and to catch every broken strategy of the suite's self-test, while
	// 2 adapters × 3 servers × 5 built-in strategies stay around a minute
	// per adapter on 2 CPUs. Under go test -short the default is
	// ShortDuration (rapid, for its part, runs a fifth of its checks).
	// -conformance.duration, CONFORMANCE_DURATION.
	Duration time.Duration

	// MaxOps bounds the operations of one linearizability history, so a
	// fast store or a long Duration still gives a history porcupine checks
	// quickly. Default 20000; -conformance.maxops, CONFORMANCE_MAXOPS.
	MaxOps int

	// OpTimeout is the deadline of each call. A call that ends in a
	// timeout or a connection error is ambiguous: it may or may not have
	// taken effect, and the checker considers both. Default 5s;
	// CONFORMANCE_OP_TIMEOUT.
	OpTimeout time.Duration

	// FaultRate is the fraction of backend calls of the linearizability
	// checks that fail as a lost request or a lost reply would (half of
	// each), so ambiguous calls, and how strategies handle a failed call,
	// are exercised in every run. Default 0.002; negative disables;
	// CONFORMANCE_FAULT_RATE.
	FaultRate float64

	// CheckTimeout bounds porcupine's search per history; a search that
	// runs out is reported as inconclusive (logged), not as a violation.
	// Default 2m; CONFORMANCE_CHECK_TIMEOUT.
	CheckTimeout time.Duration

	// ArtifactDir receives porcupine's HTML visualisation of a
	// non-linearizable history; the path is logged. Default os.TempDir();
	// CONFORMANCE_ARTIFACTS.
	ArtifactDir string
}

// Defaults of Options.
const (
	DefaultClients      = 8
	DefaultNodes        = 2
	DefaultDuration     = time.Second
	ShortDuration       = 250 * time.Millisecond // Duration's default under -short
	DefaultMaxOps       = 20000
	DefaultOpTimeout    = 5 * time.Second
	DefaultCheckTimeout = 2 * time.Minute
	DefaultFaultRate    = 0.002
)

var (
	flagClients  = flag.Int("conformance.clients", 0, "conformance: concurrent clients of linearizability checks (default 8)")
	flagNodes    = flag.Int("conformance.nodes", 0, "conformance: services (each on its own client) the concurrent clients share (default 2)")
	flagDuration = flag.Duration("conformance.duration", 0, "conformance: recording time of one linearizability history (default 1s)")
	flagMaxOps   = flag.Int("conformance.maxops", 0, "conformance: most operations of one linearizability history (default 20000)")
)

// resolve applies flags, environment variables and defaults.
func (o Options) resolve() (Options, error) {
	err := errors.Join(
		pickInt(&o.Clients, *flagClients, "CONFORMANCE_CLIENTS", DefaultClients),
		pickInt(&o.Nodes, *flagNodes, "CONFORMANCE_NODES", DefaultNodes),
		pickInt(&o.MaxOps, *flagMaxOps, "CONFORMANCE_MAXOPS", DefaultMaxOps),
		pickDuration(&o.Duration, *flagDuration, "CONFORMANCE_DURATION", defaultDuration()),
		pickDuration(&o.OpTimeout, 0, "CONFORMANCE_OP_TIMEOUT", DefaultOpTimeout),
		pickDuration(&o.CheckTimeout, 0, "CONFORMANCE_CHECK_TIMEOUT", DefaultCheckTimeout),
	)
	if env := os.Getenv("CONFORMANCE_FAULT_RATE"); env != "" {
		f, perr := strconv.ParseFloat(env, 64)
		if perr != nil || f >= 1 {
			err = errors.Join(err, fmt.Errorf("conformance: CONFORMANCE_FAULT_RATE=%q is not a fraction below 1", env))
		}
		o.FaultRate = f
	}
	switch {
	case o.FaultRate == 0:
		o.FaultRate = DefaultFaultRate
	case o.FaultRate < 0:
		o.FaultRate = 0
	}
	if env := os.Getenv("CONFORMANCE_ARTIFACTS"); env != "" {
		o.ArtifactDir = env
	}
	if o.ArtifactDir == "" {
		o.ArtifactDir = os.TempDir()
	}
	o.Nodes = min(o.Nodes, o.Clients)
	for _, p := range o.Properties {
		switch p {
		case PropFencing, PropCAS, PropSequential, PropLinearizable, PropUsers, PropSeq, PropReaper:
		default:
			err = errors.Join(err, fmt.Errorf("conformance: unknown property %q (known: %s, %s, %s, %s, %s, %s, %s)",
				p, PropFencing, PropCAS, PropSequential, PropLinearizable, PropUsers, PropSeq, PropReaper))
		}
	}
	return o, err
}

func pickInt(dst *int, fromFlag int, env string, def int) error {
	switch {
	case fromFlag > 0:
		*dst = fromFlag
	case os.Getenv(env) != "":
		n, err := strconv.Atoi(os.Getenv(env))
		if err != nil || n <= 0 {
			return fmt.Errorf("conformance: %s=%q is not a positive integer", env, os.Getenv(env))
		}
		*dst = n
	case *dst <= 0:
		*dst = def
	}
	return nil
}

// defaultDuration is Duration's default: shorter in the fast mode, which
// trades the depth of each history for a run of the whole module in about
// a minute; the full run keeps the budget the self-test calibrated.
func defaultDuration() time.Duration {
	if testing.Short() {
		return ShortDuration
	}
	return DefaultDuration
}

func pickDuration(dst *time.Duration, fromFlag time.Duration, env string, def time.Duration) error {
	switch {
	case fromFlag > 0:
		*dst = fromFlag
	case os.Getenv(env) != "":
		d, err := time.ParseDuration(os.Getenv(env))
		if err != nil || d <= 0 {
			return fmt.Errorf("conformance: %s=%q is not a positive duration such as 30s", env, os.Getenv(env))
		}
		*dst = d
	case *dst <= 0:
		*dst = def
	}
	return nil
}
