package strategy

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/realtime-message/presence/core"
)

// Registry maps strategy names to factories. F is the factory type.
// Safe for concurrent use.
type Registry[F any] struct {
	kind    string
	mu      sync.RWMutex
	entries map[string]entry[F]
}

type entry[F any] struct {
	params  []string
	factory F
}

// Register adds a strategy under name, accepting the listed parameters.
// Registering a name twice panics, as with database/sql drivers: it is a
// programming error found at init time.
func (r *Registry[F]) Register(name string, params []string, factory F) {
	if name == "" || strings.ContainsAny(name, "?&=") {
		panic(fmt.Sprintf("strategy: invalid %s strategy name %q", r.kind, name))
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.entries == nil {
		r.entries = map[string]entry[F]{}
	}
	if _, dup := r.entries[name]; dup {
		panic(fmt.Sprintf("strategy: %s strategy %q registered twice", r.kind, name))
	}
	params = slices.Clone(params)
	slices.Sort(params)
	r.entries[name] = entry[F]{params: params, factory: factory}
}

// Names returns the registered names, sorted.
func (r *Registry[F]) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Lookup parses spec ("name?param=value&...") and returns the factory and
// its parameters. An unknown name or parameter is an error listing what is
// accepted.
func (r *Registry[F]) Lookup(spec string) (F, *Params, error) {
	var zero F
	name, query, _ := strings.Cut(strings.TrimSpace(spec), "?")
	r.mu.RLock()
	e, ok := r.entries[name]
	r.mu.RUnlock()
	if !ok {
		return zero, nil, fmt.Errorf("%w: unknown %s strategy %q (registered: %s)",
			core.ErrInvalidArgument, r.kind, name, strings.Join(r.Names(), ", "))
	}
	values, err := url.ParseQuery(query)
	if err != nil {
		return zero, nil, fmt.Errorf("%w: %s strategy spec %q: %v", core.ErrInvalidArgument, r.kind, spec, err)
	}
	for k, v := range values {
		if !slices.Contains(e.params, k) {
			accepted := "none"
			if len(e.params) > 0 {
				accepted = strings.Join(e.params, ", ")
			}
			return zero, nil, fmt.Errorf("%w: %s strategy %q has no parameter %q (accepted: %s)",
				core.ErrInvalidArgument, r.kind, name, k, accepted)
		}
		if len(v) != 1 {
			return zero, nil, fmt.Errorf("%w: %s strategy %q: parameter %q given %d times", core.ErrInvalidArgument, r.kind, name, k, len(v))
		}
	}
	return e.factory, &Params{Name: name, values: values}, nil
}

// Params are the parsed parameters of a spec.
type Params struct {
	Name   string
	values url.Values
}

// Has reports whether the spec set the parameter.
func (p *Params) Has(key string) bool { return p.values.Has(key) }

// Duration returns a parameter in Go duration syntax ("50ms"); a bare
// number means milliseconds, as the original server's *Ms options did.
func (p *Params) Duration(key string, def time.Duration) (time.Duration, error) {
	s := p.values.Get(key)
	if s == "" {
		return def, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		s = strconv.FormatInt(n, 10) + "ms"
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: strategy %q: %s=%q is not a positive duration (e.g. 50ms)", core.ErrInvalidArgument, p.Name, key, s)
	}
	return d, nil
}

// Int returns a parameter as an integer in [min, max].
func (p *Params) Int(key string, def, min, max int) (int, error) {
	s := p.values.Get(key)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min || n > max {
		return 0, fmt.Errorf("%w: strategy %q: %s=%q must be an integer in [%d, %d]", core.ErrInvalidArgument, p.Name, key, s, min, max)
	}
	return n, nil
}
