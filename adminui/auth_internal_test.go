package adminui

import (
	"testing"
	"time"
)

func TestSessionsExpireAndStayBounded(t *testing.T) {
	s := newSessions(time.Hour, 3)
	var ids []string
	for range 4 {
		id, err := s.create()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		time.Sleep(time.Millisecond) // distinct expiries: the oldest is the first
	}
	if s.valid(ids[0]) {
		t.Error("the oldest session outlived the bound")
	}
	for _, id := range ids[1:] {
		if !s.valid(id) {
			t.Errorf("session %s dropped", id)
		}
	}
	if len(s.byID) != 3 {
		t.Errorf("%d sessions kept, want 3", len(s.byID))
	}

	short := newSessions(time.Millisecond, 3)
	id, err := short.create()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	if short.valid(id) {
		t.Error("an expired session is still valid")
	}
	if len(short.byID) != 0 {
		t.Error("an expired session was kept after its check")
	}
	if short.valid("") || short.valid("nope") {
		t.Error("an unknown session is valid")
	}
}
