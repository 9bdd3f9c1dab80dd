package backend

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrCrossSlot reports a command whose keys do not share one cluster hash
// slot. Such a command would be refused by Redis Cluster (and would make
// some clients panic), so it is refused before anything is sent, on a
// standalone server too, so a bug shows up before production.
var ErrCrossSlot = errors.New("backend: keys of one command must share a cluster hash slot (use a {hash tag})")

// Cmd is one Redis command. On the wire it is Name, Pre, Keys, Args in that
// order; keeping keys apart lets cluster clients route the command and lets
// the port check slots.
type Cmd struct {
	Name string   // command name, e.g. "HSET" or "EVALSHA"
	Pre  []string // tokens between the name and the keys (EVALSHA's sha1 and numkeys)
	Keys []string
	Args []string
}

// C builds a command whose keys come right after its name, the shape of
// almost every command we use (HSET key f v, ZADD key score m, DEL k1 k2).
func C(name string, keys []string, args ...string) Cmd {
	return Cmd{Name: name, Keys: keys, Args: args}
}

// K is shorthand for a one-key command: K("HGETALL", key).
func K(name, key string, args ...string) Cmd {
	return Cmd{Name: name, Keys: []string{key}, Args: args}
}

// Line returns the command as the words sent on the wire.
func (c Cmd) Line() []string {
	out := make([]string, 0, 1+len(c.Pre)+len(c.Keys)+len(c.Args))
	out = append(out, c.Name)
	out = append(out, c.Pre...)
	out = append(out, c.Keys...)
	return append(out, c.Args...)
}

// Slot returns the cluster slot of the command's keys, or -1 for a command
// without keys. It fails with ErrCrossSlot when keys disagree.
func (c Cmd) Slot() (int, error) {
	if len(c.Keys) == 0 {
		return -1, nil
	}
	s := KeySlot(c.Keys[0])
	for _, k := range c.Keys[1:] {
		if KeySlot(k) != s {
			return 0, fmt.Errorf("%w: %s %q and %q", ErrCrossSlot, c.Name, c.Keys[0], k)
		}
	}
	return s, nil
}

// CheckSlots validates every command of a pipeline; adapters call it before
// sending anything.
func CheckSlots(cmds []Cmd) error {
	for _, c := range cmds {
		if len(c.Keys) > 1 && !sameTag(c.Keys) {
			if _, err := c.Slot(); err != nil {
				return err
			}
		}
	}
	return nil
}

// sameTag reports whether every key has the same non-empty hash tag, the
// common case (every script call), which needs no CRC16 to be one slot.
func sameTag(keys []string) bool {
	tag := hashTag(keys[0])
	if tag == "" {
		return false
	}
	for _, k := range keys[1:] {
		if hashTag(k) != tag {
			return false
		}
	}
	return true
}

// hashTag returns the part of key that decides its slot when it has a
// non-empty {tag}, else "".
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return ""
}

// SameSlot checks that keys share one slot (for WATCH).
func SameSlot(keys []string) error {
	_, err := Cmd{Name: "WATCH", Keys: keys}.Slot()
	return err
}

// Itoa formats an int64 argument.
func Itoa(n int64) string { return strconv.FormatInt(n, 10) }
