package backend

import (
	"errors"
	"fmt"
	"strconv"
)

// Kind is the type of a Reply.
type Kind uint8

// Reply kinds. RESP3 maps arrive as KindArray of alternating keys and
// values, doubles and big numbers as KindString, booleans as KindInt (0/1),
// so callers handle one shape whatever protocol the adapter speaks.
const (
	KindNil Kind = iota
	KindInt
	KindString // bulk and simple strings
	KindArray
	KindError // Reply.Err holds the server's error
)

// ErrNil is returned by the accessors of a nil reply.
var ErrNil = errors.New("backend: nil reply")

// RedisError is an error reply from the server, e.g. "WRONGTYPE ..." or
// "NOSCRIPT ...". Its text is the server's message unchanged.
type RedisError struct{ Msg string }

func (e *RedisError) Error() string { return "redis: " + e.Msg }

// Prefix returns the error code, the first word of the message ("NOSCRIPT").
func (e *RedisError) Prefix() string {
	for i := 0; i < len(e.Msg); i++ {
		if e.Msg[i] == ' ' {
			return e.Msg[:i]
		}
	}
	return e.Msg
}

// IsRedisError reports whether err is (or wraps) a server error reply whose
// code is prefix.
func IsRedisError(err error, prefix string) bool {
	var re *RedisError
	return errors.As(err, &re) && re.Prefix() == prefix
}

// Reply is one command's result. The zero value is a nil reply.
type Reply struct {
	Kind  Kind
	Int   int64
	Str   string
	Elems []Reply
	Err   error // set when Kind is KindError
}

// IntReply, StrReply, ArrReply and ErrReply build replies; adapters and
// tests use them.
func IntReply(n int64) Reply        { return Reply{Kind: KindInt, Int: n} }
func StrReply(s string) Reply       { return Reply{Kind: KindString, Str: s} }
func ArrReply(elems ...Reply) Reply { return Reply{Kind: KindArray, Elems: elems} }
func ErrReply(msg string) Reply     { return Reply{Kind: KindError, Err: &RedisError{Msg: msg}} }
func NilReply() Reply               { return Reply{} }
func (r Reply) IsNil() bool         { return r.Kind == KindNil }
func (r Reply) String() string      { return fmt.Sprintf("%#v", r) }

// Error returns the server error of the reply, or nil.
func (r Reply) Error() error {
	if r.Kind == KindError {
		return r.Err
	}
	return nil
}

func (r Reply) kindErr(want string) error {
	switch r.Kind {
	case KindError:
		return r.Err
	case KindNil:
		return ErrNil
	}
	return fmt.Errorf("backend: reply is %s, not %s", r.kindName(), want)
}

func (r Reply) kindName() string {
	return [...]string{"nil", "integer", "string", "array", "error"}[r.Kind]
}

// AsInt returns an integer reply, or a string reply that parses as one
// (HGET of a counter).
func (r Reply) AsInt() (int64, error) {
	switch r.Kind {
	case KindInt:
		return r.Int, nil
	case KindString:
		n, err := strconv.ParseInt(r.Str, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("backend: reply %q is not an integer", r.Str)
		}
		return n, nil
	}
	return 0, r.kindErr("integer")
}

// AsString returns a string reply, or an integer reply in decimal.
func (r Reply) AsString() (string, error) {
	switch r.Kind {
	case KindString:
		return r.Str, nil
	case KindInt:
		return strconv.FormatInt(r.Int, 10), nil
	}
	return "", r.kindErr("string")
}

// AsArray returns the elements of an array reply. A nil reply is an empty
// array, since Redis answers nil for an empty multi-bulk in places.
func (r Reply) AsArray() ([]Reply, error) {
	switch r.Kind {
	case KindArray:
		return r.Elems, nil
	case KindNil:
		return nil, nil
	}
	return nil, r.kindErr("array")
}

// AsStrings returns an array of strings; nil elements become "".
func (r Reply) AsStrings() ([]string, error) {
	elems, err := r.AsArray()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(elems))
	for i, e := range elems {
		if e.Kind == KindNil {
			continue
		}
		if out[i], err = e.AsString(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// AsStringMap returns an array of alternating fields and values (HGETALL)
// as a map.
func (r Reply) AsStringMap() (map[string]string, error) {
	s, err := r.AsStrings()
	if err != nil {
		return nil, err
	}
	if len(s)%2 != 0 {
		return nil, fmt.Errorf("backend: reply has %d elements, want field/value pairs", len(s))
	}
	m := make(map[string]string, len(s)/2)
	for i := 0; i < len(s); i += 2 {
		m[s[i]] = s[i+1]
	}
	return m, nil
}

// FirstError returns the first server error among replies, or nil.
func FirstError(replies []Reply) error {
	for _, r := range replies {
		if r.Kind == KindError {
			return r.Err
		}
	}
	return nil
}
