package goredis

import (
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/realtime-message/presence/backend"
)

// toReply converts the result of one go-redis command. It returns an error
// only for a failure that is not the server's reply (network, context).
func toReply(val any, err error) (backend.Reply, error) {
	switch {
	case err == nil:
		return convert(val), nil
	case err == redis.Nil:
		return backend.NilReply(), nil
	case isServerError(err):
		return serverError(err), nil
	}
	return backend.Reply{}, err
}

func serverError(err error) backend.Reply {
	return backend.Reply{Kind: backend.KindError, Err: &backend.RedisError{Msg: err.Error()}}
}

// convert maps a value go-redis parsed (RESP2 or RESP3) onto the shapes
// backend.Reply documents. It never panics.
func convert(v any) backend.Reply {
	switch v := v.(type) {
	case nil:
		return backend.NilReply()
	case string:
		return backend.StrReply(v)
	case int64:
		return backend.IntReply(v)
	case []any:
		elems := make([]backend.Reply, len(v))
		for i, e := range v {
			elems[i] = convert(e)
		}
		return backend.ArrReply(elems...)
	case map[any]any:
		return convertMap(v)
	case bool:
		if v {
			return backend.IntReply(1)
		}
		return backend.IntReply(0)
	case float64:
		return backend.StrReply(formatFloat(v))
	case *big.Int:
		if v == nil {
			return backend.NilReply()
		}
		return backend.StrReply(v.String())
	case error:
		// An error element inside an array (EXEC, a script's table).
		if v == redis.Nil {
			return backend.NilReply()
		}
		return serverError(v)
	case []byte:
		return backend.StrReply(string(v))
	case int:
		return backend.IntReply(int64(v))
	}
	return backend.StrReply(fmt.Sprint(v))
}

// convertMap flattens a RESP3 map into alternating keys and values, in
// key order so that a reply does not change from call to call.
func convertMap(m map[any]any) backend.Reply {
	type kv struct {
		sortKey string
		k, v    backend.Reply
	}
	pairs := make([]kv, 0, len(m))
	for k, v := range m {
		pairs = append(pairs, kv{fmt.Sprint(k), convert(k), convert(v)})
	}
	sort.Slice(pairs, func(i, j int) bool { return pairs[i].sortKey < pairs[j].sortKey })
	elems := make([]backend.Reply, 0, 2*len(pairs))
	for _, p := range pairs {
		elems = append(elems, p.k, p.v)
	}
	return backend.ArrReply(elems...)
}

// formatFloat writes a RESP3 double as Redis writes it under RESP2:
// integral values without exponent or fraction (so a millisecond score
// still parses with AsInt), inf and nan in Redis's spelling.
func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	case math.Abs(f) < 1e21:
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
