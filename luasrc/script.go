// Package luasrc holds the Lua scripts the library runs on Redis. The
// *.lua files are the source of truth: go generate writes scripts_gen.go,
// which embeds each file verbatim (go:embed) with the SHA1 Redis will know
// it by, and luacall/calls_gen.go, the typed calls every caller uses. Each
// file opens with a header declaring its KEYS, ARGV and reply; gen/header.go
// documents its form.
package luasrc

//go:generate go run ../gen -dir . -out scripts_gen.go -calls ../luacall/calls_gen.go

// Script is one generated Lua script.
type Script struct {
	Name   string // file name without .lua
	Source string
	SHA1   string // hex SHA1 of Source, as SCRIPT LOAD returns it
}
