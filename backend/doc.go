// Package backend is the port between the presence strategies and Redis.
//
// Strategies know Redis only through [Client]: a pipeline of arbitrary
// commands with typed replies, an optimistic transaction on a dedicated
// connection, publish, pattern-subscribe and close. Scripts generated in
// package luasrc are run through [Scripts], which sends EVALSHA and falls back
// to EVAL when the server answers NOSCRIPT, so any Client gets script support
// for free. The adapters live in backend/rueidis and backend/goredis; a user's
// own adapter that passes package conformance is a supported backend.
package backend

//go:generate go tool mockgen -write_command_comment=false -package backendmock -destination backendmock/client.go . Client,Subscription,Tx
