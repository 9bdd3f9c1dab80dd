package backend_test

import (
	"errors"
	"maps"
	"slices"
	"testing"

	"github.com/realtime-message/presence/backend"
)

func TestReplyAccessors(t *testing.T) {
	if n, err := backend.IntReply(5).AsInt(); n != 5 || err != nil {
		t.Errorf("IntReply.AsInt: %d, %v", n, err)
	}
	if n, err := backend.StrReply("-12").AsInt(); n != -12 || err != nil {
		t.Errorf("StrReply(-12).AsInt: %d, %v", n, err)
	}
	if _, err := backend.StrReply("x").AsInt(); err == nil {
		t.Error("StrReply(x).AsInt: no error")
	}
	if _, err := backend.NilReply().AsInt(); !errors.Is(err, backend.ErrNil) {
		t.Errorf("NilReply.AsInt: %v", err)
	}
	if s, err := backend.IntReply(7).AsString(); s != "7" || err != nil {
		t.Errorf("IntReply.AsString: %q, %v", s, err)
	}
	if _, err := backend.NilReply().AsString(); !errors.Is(err, backend.ErrNil) {
		t.Errorf("NilReply.AsString: %v", err)
	}
	if _, err := backend.ArrReply().AsString(); err == nil || errors.Is(err, backend.ErrNil) {
		t.Errorf("ArrReply.AsString: %v", err)
	}
	e := backend.ErrReply("WRONGTYPE Operation against a key holding the wrong kind of value")
	if _, err := e.AsInt(); !backend.IsRedisError(err, "WRONGTYPE") {
		t.Errorf("ErrReply.AsInt: %v", err)
	}
	if !backend.IsRedisError(e.Error(), "WRONGTYPE") || backend.IsRedisError(e.Error(), "ERR") {
		t.Errorf("IsRedisError: %v", e.Error())
	}
	if backend.IntReply(1).Error() != nil || !backend.NilReply().IsNil() || backend.StrReply("").IsNil() {
		t.Error("Error/IsNil")
	}
	var zero backend.Reply
	if !zero.IsNil() {
		t.Error("zero Reply is not nil")
	}
}

func TestReplyArrays(t *testing.T) {
	arr := backend.ArrReply(backend.StrReply("a"), backend.NilReply(), backend.IntReply(3))
	if s, err := arr.AsStrings(); err != nil || !slices.Equal(s, []string{"a", "", "3"}) {
		t.Errorf("AsStrings: %q, %v", s, err)
	}
	if s, err := backend.NilReply().AsStrings(); err != nil || len(s) != 0 {
		t.Errorf("NilReply.AsStrings: %q, %v", s, err)
	}
	if _, err := backend.ArrReply(backend.ArrReply()).AsStrings(); err == nil {
		t.Error("nested array AsStrings: no error")
	}
	m, err := backend.ArrReply(backend.StrReply("f1"), backend.StrReply("v1"), backend.StrReply("f2"), backend.IntReply(2)).AsStringMap()
	if err != nil || !maps.Equal(m, map[string]string{"f1": "v1", "f2": "2"}) {
		t.Errorf("AsStringMap: %v, %v", m, err)
	}
	if _, err := backend.ArrReply(backend.StrReply("f1")).AsStringMap(); err == nil {
		t.Error("odd AsStringMap: no error")
	}
	if _, err := backend.StrReply("x").AsArray(); err == nil {
		t.Error("StrReply.AsArray: no error")
	}
}

func TestFirstErrorAndPrefix(t *testing.T) {
	rs := []backend.Reply{backend.IntReply(1), backend.ErrReply("NOSCRIPT No matching script"), backend.ErrReply("ERR x")}
	err := backend.FirstError(rs)
	var re *backend.RedisError
	if !errors.As(err, &re) || re.Prefix() != "NOSCRIPT" || re.Msg != "NOSCRIPT No matching script" {
		t.Errorf("FirstError: %v", err)
	}
	if backend.FirstError(rs[:1]) != nil {
		t.Error("FirstError without errors")
	}
	if (&backend.RedisError{Msg: "LOADING"}).Prefix() != "LOADING" {
		t.Error("Prefix of a one-word message")
	}
}
