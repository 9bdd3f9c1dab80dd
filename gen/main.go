// Command gen reads the *.lua scripts of luasrc and writes two files:
// luasrc/scripts_gen.go embeds each file verbatim (go:embed) as a
// luasrc.Script with the SHA1 Redis will give it, computed here; and
// luacall/calls_gen.go holds, per script, a typed call (its KEYS and ARGV
// as named fields, built into a backend.Eval in the header's order) and a
// typed reply decoder. Both come from the script's header, whose strict
// form is documented in header.go; a header that disagrees with its body
// is refused.
//
//	go run ./gen -dir luasrc -out scripts_gen.go -calls ../luacall/calls_gen.go
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
)

func main() {
	dir := flag.String("dir", ".", "directory holding the *.lua files")
	out := flag.String("out", "scripts_gen.go", "output file name, inside -dir")
	calls := flag.String("calls", "../luacall/calls_gen.go", "the typed calls' file, relative to -dir")
	flag.Parse()
	src, typed, err := Generate(*dir)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*dir, *out), src, 0o644); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*dir, *calls), typed, 0o644); err != nil {
		log.Fatal(err)
	}
}

// Generate parses every *.lua of dir and returns the Go source of luasrc's
// embedding file and of luacall's typed calls.
func Generate(dir string) (sources, calls []byte, err error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.lua"))
	if err != nil {
		return nil, nil, err
	}
	if len(paths) == 0 {
		return nil, nil, fmt.Errorf("gen: no .lua files in %s", dir)
	}
	sort.Strings(paths)
	var scripts []*Script
	for _, p := range paths {
		body, err := os.ReadFile(p)
		if err != nil {
			return nil, nil, err
		}
		s, err := parseScript(strings.TrimSuffix(filepath.Base(p), ".lua"), body)
		if err != nil {
			return nil, nil, err
		}
		scripts = append(scripts, s)
	}
	if sources, err = emitSources(scripts); err != nil {
		return nil, nil, err
	}
	if calls, err = emitCalls(scripts); err != nil {
		return nil, nil, err
	}
	return sources, calls, nil
}

// identifier turns "heartbeat_patch" into "HeartbeatPatch".
func identifier(base string) (string, error) {
	var sb strings.Builder
	up := true
	for _, r := range base {
		switch {
		case r == '_' || r == '-':
			up = true
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			if up {
				r = unicode.ToUpper(r)
				up = false
			}
			sb.WriteRune(r)
		default:
			return "", fmt.Errorf("gen: script name %q: only letters, digits, _ and -", base)
		}
	}
	if sb.Len() == 0 || unicode.IsDigit(rune(sb.String()[0])) {
		return "", fmt.Errorf("gen: script name %q does not make a Go identifier", base)
	}
	return sb.String(), nil
}
