package presence

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/realtime-message/presence/backend"
	"github.com/realtime-message/presence/luacall"
)

// Lock is the state of a named channel lock. A lock always has a TTL, so
// a crashed owner cannot hold a channel forever. Locks are advisory by
// default: only a mutation that names one (MetadataOptions.LockName) is
// checked against it. With Config.Locks "enforced", while any lock of a
// channel is held, its metadata can be changed only by the holder naming
// a lock it holds (see Config.Locks).
type Lock struct {
	Name      string
	Owner     string    // "" when the lock is free
	ExpiresAt time.Time // by Config.Now plus the server's remaining TTL; zero when free
	// FencingToken is the acquisition's fencing token (GetLock: the
	// holder's, 0 when free): it is greater than every token handed out for this
	// lock name of the channel before, by anyone, and RenewLock keeps it.
	// Pass it in MetadataOptions.FencingToken so a write made after the
	// lock was lost and taken again is refused (docs/DESIGN.md §4, Locks).
	// 0 from RenewLock for a lock taken before fencing tokens existed.
	FencingToken int64
}

// fenceKeep is how much longer than its lock a fencing token is kept.
// Once the fence key has expired, the next token comes from the Redis
// clock alone; the margin is the step back of that clock the tokens
// survive (docs/DESIGN.md §4, Locks). It also bounds how long an empty
// channel keeps the key.
const fenceKeep = 2 * time.Second

var fenceKeepMs = strconv.FormatInt(fenceKeep.Milliseconds(), 10)

// Held reports whether someone holds the lock.
func (l Lock) Held() bool { return l.Owner != "" }

// AcquireLock takes the channel's lock name for owner for ttl (at least
// 1ms, at most Config.MaxLockTTL). The owner may acquire again, which resets the TTL. Held by
// another owner: ErrLocked. Every acquisition, the owner's again
// included, gets a new Lock.FencingToken.
func (s *Service) AcquireLock(ctx context.Context, ch Channel, name, owner string, ttl time.Duration) (Lock, error) {
	ms, err := s.checkLock(ch, name, owner, ttl)
	if err != nil {
		return Lock{}, err
	}
	now := s.cfg.Now()
	rep, err := luacall.LockAcquire{Lock: s.keys.Lock(ch.Type, ch.Name, name), Index: s.keys.LockIndex(ch.Type, ch.Name),
		Fence: s.keys.Fence(ch.Type, ch.Name, name), Owner: owner, TTLMs: ms, Name: name,
		LockPrefix: s.keys.LockPrefix(ch.Type, ch.Name), KeepMs: fenceKeepMs}.Run(ctx, s.scripts)
	if err != nil {
		return Lock{}, fmt.Errorf("presence: acquire lock: %w", err)
	}
	if rep.Case == luacall.LockAcquireTaken {
		return Lock{}, fmt.Errorf("%w: lock %q of channel %s:%s is held by %q", ErrLocked, name, ch.Type, ch.Name, rep.Owner)
	}
	left := rep.TTLMs
	return Lock{Name: name, Owner: owner, ExpiresAt: now.Add(time.Duration(left) * time.Millisecond), FencingToken: rep.Token}, nil
}

// RenewLock resets the TTL of a lock owner holds to ttl, keeping its
// fencing token. A lock that is free (or expired) or held by another
// owner: ErrLocked.
func (s *Service) RenewLock(ctx context.Context, ch Channel, name, owner string, ttl time.Duration) (Lock, error) {
	ms, err := s.checkLock(ch, name, owner, ttl)
	if err != nil {
		return Lock{}, err
	}
	now := s.cfg.Now()
	rep, err := luacall.LockRenew{Lock: s.keys.Lock(ch.Type, ch.Name, name), Index: s.keys.LockIndex(ch.Type, ch.Name),
		Fence: s.keys.Fence(ch.Type, ch.Name, name), Owner: owner, TTLMs: ms, Name: name, KeepMs: fenceKeepMs}.Run(ctx, s.scripts)
	if err != nil {
		return Lock{}, fmt.Errorf("presence: renew lock: %w", err)
	}
	if rep.Case != luacall.LockRenewRenewed {
		return Lock{}, fmt.Errorf("%w: lock %q of channel %s:%s is not held by %q", ErrLocked, name, ch.Type, ch.Name, owner)
	}
	return Lock{Name: name, Owner: owner, ExpiresAt: now.Add(ttl.Truncate(time.Millisecond)), FencingToken: rep.Token}, nil
}

// ReleaseLock frees a lock owner holds, atomically (compare and delete).
// A lock that is free or held by another owner: ErrLocked.
func (s *Service) ReleaseLock(ctx context.Context, ch Channel, name, owner string) error {
	if _, err := s.checkLock(ch, name, owner, time.Millisecond); err != nil {
		return err
	}
	rep, err := luacall.LockRelease{Lock: s.keys.Lock(ch.Type, ch.Name, name), Index: s.keys.LockIndex(ch.Type, ch.Name),
		Owner: owner, Name: name}.Run(ctx, s.scripts)
	if err != nil {
		return fmt.Errorf("presence: release lock: %w", err)
	}
	if !rep.Released {
		return fmt.Errorf("%w: lock %q of channel %s:%s is not held by %q", ErrLocked, name, ch.Type, ch.Name, owner)
	}
	return nil
}

// GetLock returns who holds the lock, until when, and under which fencing
// token (0 for a lock taken before fencing tokens existed); a free lock
// has an empty Owner and no token.
func (s *Service) GetLock(ctx context.Context, ch Channel, name string) (Lock, error) {
	if err := s.checkOpen(); err != nil {
		return Lock{}, err
	}
	if err := s.checkChannel(ch); err != nil {
		return Lock{}, err
	}
	if err := checkID("lockName", name, s.cfg.MaxIDBytes, ""); err != nil {
		return Lock{}, err
	}
	key, fence := s.keys.Lock(ch.Type, ch.Name, name), s.keys.Fence(ch.Type, ch.Name, name)
	// The reads are one pipeline, not one transaction: the fence is read
	// before and after the lock, and every acquire raises it, so equal
	// reads mean the owner read is the holder of that token. An acquire
	// in between is rare (it needs the lock free or re-taken within a
	// round trip); then the reads are taken again.
	for try := 0; ; try++ {
		now := s.cfg.Now()
		r, err := s.client.Do(ctx, backend.K("GET", fence), backend.K("GET", key), backend.K("PTTL", key), backend.K("GET", fence))
		if err == nil {
			err = backend.FirstError(r)
		}
		if err != nil {
			return Lock{}, fmt.Errorf("presence: get lock: %w", err)
		}
		l := Lock{Name: name}
		if r[1].IsNil() {
			return l, nil
		}
		owner, err1 := r[1].AsString()
		left, err2 := r[2].AsInt()
		before, err3 := fenceToken(r[0])
		after, err4 := fenceToken(r[3])
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return Lock{}, fmt.Errorf("presence: get lock: unexpected replies %v: %w", r, err)
		}
		if before != after && try < 2 {
			continue
		}
		switch {
		case left == -2: // expired between GET and PTTL
			return l, nil
		case left >= 0:
			l.ExpiresAt = now.Add(time.Duration(left) * time.Millisecond)
		}
		l.Owner = owner
		if before == after {
			l.FencingToken = after
		}
		return l, nil
	}
}

// fenceToken decodes a GET of a fence key: 0 when there is none.
func fenceToken(r backend.Reply) (int64, error) {
	if r.IsNil() {
		return 0, nil
	}
	return r.AsInt()
}

// checkLock validates a lock call and returns ttl in milliseconds.
func (s *Service) checkLock(ch Channel, name, owner string, ttl time.Duration) (string, error) {
	if err := s.checkOpen(); err != nil {
		return "", err
	}
	if err := s.checkChannel(ch); err != nil {
		return "", err
	}
	if err := checkID("lockName", name, s.cfg.MaxIDBytes, ""); err != nil {
		return "", err
	}
	if owner == "" {
		// docs/PROTOCOL.md: no authenticated user is a lock failure.
		return "", fmt.Errorf("%w: a lock needs an owner (the acting user)", ErrLocked)
	}
	if err := checkID("owner", owner, s.cfg.MaxIDBytes, ""); err != nil {
		return "", err
	}
	if ttl < time.Millisecond {
		return "", invalid("lock ttl %v must be at least 1ms", ttl)
	}
	if ttl > s.cfg.MaxLockTTL {
		return "", invalid("lock ttl %v is more than the %v a lock may be held for; renew it instead", ttl, s.cfg.MaxLockTTL)
	}
	return strconv.FormatInt(ttl.Milliseconds(), 10), nil
}
