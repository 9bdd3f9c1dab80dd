package rueidis

import (
	"fmt"
	"testing"

	"github.com/realtime-message/presence/backend"
)

// TestClusterRuns: a pipeline is cut only where rueidis's cluster client
// would refuse it (a keyless command together with keys of two slots), and
// the runs keep the commands' order.
func TestClusterRuns(t *testing.T) {
	a, a2, b := backend.K("GET", "{a}1"), backend.K("GET", "{a}2"), backend.K("GET", "{b}1")
	ping := backend.Cmd{Name: "PING"}
	for _, tc := range []struct {
		cmds []backend.Cmd
		want string
	}{
		{[]backend.Cmd{a}, "[[{a}1]]"},
		{[]backend.Cmd{ping}, "[[PING]]"},
		{[]backend.Cmd{a, b, a2}, "[[{a}1 {b}1 {a}2]]"},
		{[]backend.Cmd{ping, a, a2, ping}, "[[PING {a}1 {a}2 PING]]"},
		{[]backend.Cmd{a, b, ping}, "[[{a}1 {b}1] [PING]]"},
		{[]backend.Cmd{ping, a, b}, "[[PING {a}1] [{b}1]]"},
		{[]backend.Cmd{a, ping, b, ping, a}, "[[{a}1 PING] [{b}1 PING] [{a}1]]"},
	} {
		var got [][]string
		for _, run := range clusterRuns(tc.cmds) {
			var names []string
			for _, c := range run {
				if len(c.Keys) > 0 {
					names = append(names, c.Keys[0])
				} else {
					names = append(names, c.Name)
				}
			}
			got = append(got, names)
		}
		if s := fmt.Sprint(got); s != tc.want {
			t.Errorf("clusterRuns: %s, want %s", s, tc.want)
		}
	}
}
