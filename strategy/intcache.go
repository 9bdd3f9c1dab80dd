package strategy

import (
	"strconv"
	"sync/atomic"
)

// intCache formats an int64, reusing the last string while the value
// repeats: heartbeats in one millisecond share "now", and a conn's epoch
// changes only on rejoin. A miss costs one allocation more than
// strconv; a hit none.
type intCache struct{ last atomic.Pointer[formattedInt] }

type formattedInt struct {
	n int64
	s string
}

func (c *intCache) format(n int64) string {
	if f := c.last.Load(); f != nil && f.n == n {
		return f.s
	}
	f := &formattedInt{n, strconv.FormatInt(n, 10)}
	c.last.Store(f)
	return f.s
}
