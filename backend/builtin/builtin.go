// Package builtin registers the built-in Redis adapters, rueidis and
// goredis, in the backend registry, so presence.Open and
// presence.Config.Backend can select them by name:
//
//	import _ "github.com/realtime-message/presence/backend/builtin"
//
// The root package imports no adapter, so a program that uses only one can
// import that one (backend/rueidis or backend/goredis) instead and link
// only its Redis library; a program of its own adapter registers it the
// same way (backend.Register).
package builtin

import (
	_ "github.com/realtime-message/presence/backend/goredis" // registers "goredis"
	_ "github.com/realtime-message/presence/backend/rueidis" // registers "rueidis"
)
