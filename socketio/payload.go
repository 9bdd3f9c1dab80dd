package socketio

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// errPayload marks a payload that failed validation in this package, before
// anything reached the service (and so Redis).
var errPayload = errors.New("invalid payload")

func payloadErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errPayload}, args...)...)
}

// maxSafeInt is the largest integer a JSON number from a JavaScript client
// (or the parser's float64) holds exactly.
const maxSafeInt = 1<<53 - 1

// object is a decoded JSON object payload. The socket.io parser decodes
// event arguments with encoding/json into any: objects are map[string]any,
// numbers float64.
type object map[string]any

// decodedReplacement is what the Socket.IO parser (encoding/json) turns
// invalid UTF-8 and lone UTF-16 surrogates (\ud800) into. The raw text is
// gone by the time a handler runs, so a payload string holding it is
// refused: storing it would store something other than what was sent.
const decodedReplacement = '\uFFFD'

// checkPayload walks a whole decoded payload before any field is read:
// binary attachments (the parser's buffers) have no place in these
// events, and neither have strings the parser had to repair.
func checkPayload(v any) error { return checkValue(v, "payload", 0) }

// maxDepth bounds the walk; encoding/json itself stops at 10000 levels.
const maxDepth = 10000

func checkValue(v any, path string, depth int) error {
	if depth > maxDepth {
		return payloadErr("%s is nested too deeply", path)
	}
	switch x := v.(type) {
	case nil, bool, float64:
		return nil
	case string:
		return checkText(path, x)
	case []any:
		for i, e := range x {
			if err := checkValue(e, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		for k, e := range x {
			if err := checkText(path+" key", k); err != nil {
				return err
			}
			if err := checkValue(e, path+"."+k, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return payloadErr("%s is %s; only JSON values are accepted", path, jsonType(v))
}

func checkText(path, s string) error {
	if !utf8.ValidString(s) {
		return payloadErr("%s is not valid UTF-8", path)
	}
	if strings.ContainsRune(s, decodedReplacement) {
		return payloadErr("%s holds U+FFFD: invalid UTF-8 or a lone UTF-16 surrogate was sent", path)
	}
	return nil
}

// only refuses fields other than allowed, so a misspelt field (items for
// data) fails instead of being ignored and its default applied.
func (o object) only(what string, allowed ...string) error {
	for k := range o {
		if !slices.Contains(allowed, k) {
			return payloadErr("%s has unknown field %q (allowed: %s)", what, k, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// asObject returns v as an object. A missing or null payload is an empty
// object when optional, otherwise an error.
func asObject(v any, what string, optional bool) (object, error) {
	switch m := v.(type) {
	case map[string]any:
		return object(m), nil
	case nil:
		if optional {
			return object{}, nil
		}
		return nil, payloadErr("%s must be an object", what)
	}
	return nil, payloadErr("%s must be an object, not %s", what, jsonType(v))
}

// str returns a required non-empty string field.
func (o object) str(key string) (string, error) {
	v, ok := o[key]
	if !ok || v == nil {
		return "", payloadErr("%s is required", key)
	}
	s, ok := v.(string)
	if !ok {
		return "", payloadErr("%s must be a string, not %s", key, jsonType(v))
	}
	if s == "" {
		return "", payloadErr("%s must not be empty", key)
	}
	return s, nil
}

// optStr returns an optional string field ("" when absent or null).
func (o object) optStr(key string) (string, bool, error) {
	v, ok := o[key]
	if !ok || v == nil {
		return "", false, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", false, payloadErr("%s must be a string, not %s", key, jsonType(v))
	}
	return s, true, nil
}

// optInt returns an optional integer field; absent or null gives ok=false.
func (o object) optInt(key string) (n int64, ok bool, err error) {
	v, present := o[key]
	if !present || v == nil {
		return 0, false, nil
	}
	n, err = toInt(key, v)
	return n, err == nil, err
}

func toInt(key string, v any) (int64, error) {
	f, ok := v.(float64)
	if !ok {
		return 0, payloadErr("%s must be an integer, not %s", key, jsonType(v))
	}
	if f != math.Trunc(f) || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, payloadErr("%s must be an integer, not %v", key, f)
	}
	if f > maxSafeInt || f < -maxSafeInt {
		return 0, payloadErr("%s %v is out of range", key, f)
	}
	return int64(f), nil
}

// optBool returns an optional boolean field (false when absent or null).
func (o object) optBool(key string) (bool, error) {
	v, ok := o[key]
	if !ok || v == nil {
		return false, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, payloadErr("%s must be a boolean, not %s", key, jsonType(v))
	}
	return b, nil
}

// optJSONObject returns an optional object field re-encoded as JSON (nil
// when absent or null). The service canonicalizes and bounds it.
func (o object) optJSONObject(key string) (json.RawMessage, error) {
	v, ok := o[key]
	if !ok || v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, payloadErr("%s must be an object, not %s", key, jsonType(v))
	}
	b, err := json.Marshal(m)
	if err != nil {
		// checkPayload let only JSON values through; the encoder's
		// message would name Go types.
		return nil, payloadErr("%s cannot be encoded as JSON", key)
	}
	return b, nil
}

// optArray returns an optional array field (nil when absent or null).
func (o object) optArray(key string) ([]any, bool, error) {
	v, ok := o[key]
	if !ok || v == nil {
		return nil, false, nil
	}
	a, ok := v.([]any)
	if !ok {
		return nil, false, payloadErr("%s must be an array, not %s", key, jsonType(v))
	}
	return a, true, nil
}

// jsonType names the JSON type of a decoded value for error messages.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	// Binary attachments arrive as the parser's buffer types; their Go
	// names mean nothing to a client.
	return "binary or another non-JSON value"
}

// joinReq is a validated presence:join payload.
type joinReq struct {
	RoomID, UserID string
	State          json.RawMessage
}

func parseJoin(v any) (joinReq, error) {
	if err := checkPayload(v); err != nil {
		return joinReq{}, err
	}
	o, err := asObject(v, "payload", false)
	if err != nil {
		return joinReq{}, err
	}
	if err := o.only("payload", "roomId", "userId", "state"); err != nil {
		return joinReq{}, err
	}
	var r joinReq
	if r.RoomID, err = o.str("roomId"); err != nil {
		return r, err
	}
	if r.UserID, err = o.str("userId"); err != nil {
		return r, err
	}
	r.State, err = o.optJSONObject("state")
	return r, err
}

// heartbeatReq is a validated presence:heartbeat payload.
type heartbeatReq struct {
	Epoch      *int64
	PatchState json.RawMessage
}

func parseHeartbeat(v any) (heartbeatReq, error) {
	if err := checkPayload(v); err != nil {
		return heartbeatReq{}, err
	}
	o, err := asObject(v, "payload", true)
	if err != nil {
		return heartbeatReq{}, err
	}
	if err := o.only("payload", "epoch", "patchState"); err != nil {
		return heartbeatReq{}, err
	}
	var r heartbeatReq
	e, ok, err := o.optInt("epoch")
	if err != nil {
		return r, err
	}
	if ok {
		if e < 0 {
			return r, payloadErr("epoch must be ≥ 0, not %d", e)
		}
		r.Epoch = &e
	}
	r.PatchState, err = o.optJSONObject("patchState")
	return r, err
}
