package strategy_test

import (
	"errors"
	"testing"

	"github.com/realtime-message/presence/core"
	"github.com/realtime-message/presence/strategy"
)

// Env.Publish is sent as a command (in a MULTI, or as the scripts' pub
// argument), so every strategy refuses anything but a publish command,
// and takes the empty default and both publish commands.
func TestEnvPublishChecked(t *testing.T) {
	for _, pub := range []string{"EVAL", "publish", "DEL"} {
		for _, name := range strategy.Heartbeats.Names() {
			if _, err := strategy.NewHeartbeat(name, strategy.Env{Publish: pub}); !errors.Is(err, core.ErrInvalidArgument) {
				t.Errorf("heartbeat %s with Publish %q: %v, want ErrInvalidArgument", name, pub, err)
			}
		}
		for _, name := range strategy.Metadatas.Names() {
			if _, err := strategy.NewMetadata(name, strategy.Env{Publish: pub}); !errors.Is(err, core.ErrInvalidArgument) {
				t.Errorf("metadata %s with Publish %q: %v, want ErrInvalidArgument", name, pub, err)
			}
		}
	}
	for _, pub := range []string{"", "PUBLISH", "SPUBLISH"} {
		for _, name := range strategy.Heartbeats.Names() {
			hb, err := strategy.NewHeartbeat(name, strategy.Env{Publish: pub})
			if err != nil {
				t.Fatalf("heartbeat %s with Publish %q: %v", name, pub, err)
			}
			hb.Close()
		}
		for _, name := range strategy.Metadatas.Names() {
			md, err := strategy.NewMetadata(name, strategy.Env{Publish: pub})
			if err != nil {
				t.Fatalf("metadata %s with Publish %q: %v", name, pub, err)
			}
			md.Close()
		}
	}
}
