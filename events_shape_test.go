package presence

import (
	"reflect"
	"testing"

	"github.com/realtime-message/presence/core"
)

// The events are declared twice on purpose: core's as the strategies
// publish them, the root's as users decode them. A field added to one and
// not the other would vanish on the way to subscribers.
func TestEventTypesMatchWhatIsPublished(t *testing.T) {
	for _, c := range []struct{ pub, sub any }{
		{core.PresenceEvent{}, Event{}},
		{core.MetadataEvent{}, MetadataEvent{}},
	} {
		if err := sameShape(reflect.TypeOf(c.pub), reflect.TypeOf(c.sub)); err != "" {
			t.Errorf("%T and %T differ: %s", c.pub, c.sub, err)
		}
	}
}

func sameShape(a, b reflect.Type) string {
	if a.Kind() != b.Kind() {
		return a.String() + " is a " + a.Kind().String() + ", " + b.String() + " a " + b.Kind().String()
	}
	switch a.Kind() {
	case reflect.Slice:
		return sameShape(a.Elem(), b.Elem())
	case reflect.Struct:
		if a.NumField() != b.NumField() {
			return "different numbers of fields"
		}
		for i := range a.NumField() {
			fa, fb := a.Field(i), b.Field(i)
			if fa.Name != fb.Name || fa.Tag != fb.Tag {
				return "field " + fa.Name + " `" + string(fa.Tag) + "` vs " + fb.Name + " `" + string(fb.Tag) + "`"
			}
			if err := sameShape(fa.Type, fb.Type); err != "" {
				return "field " + fa.Name + ": " + err
			}
		}
	default:
		if a != b {
			return a.String() + " vs " + b.String()
		}
	}
	return ""
}
