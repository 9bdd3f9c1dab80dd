package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// A script's header is the run of "--" comment lines it opens with. Lines
// of prose are free; these lines are declarations, each on its own line,
// and are parsed strictly:
//
//	-- KEYS[1] connHash: the conn hash
//	-- ARGV[2] nowMs: the server's time, ms
//	-- ARGV[7..] patch {key, value}: a variadic tail of pairs
//	-- Returns ok {1, changed:bool, epoch:int}
//	--       | stale {0, 'STALE', stored:int}
//
// KEYS and ARGV are numbered from 1 without gaps; names are lowerCamel Go
// identifiers, unique in the script; only the last ARGV may be a tail
// (i..), whose braces name the elements of one repetition. Returns lists
// the reply's cases, the second and later on lines starting with "|"; with
// more than one case each is named. A case is {elements} or one bare
// name:type; an element is an integer or 'STRING' literal (matched, not
// returned) or name:type, with type one of
//
//	int      integer (or a string holding one)
//	bool     integer 0 or 1
//	str      string
//	hash     array of field, value, ... (HGETALL's reply)
//	idhashes array of {id, hash}
//	raw      the reply as it is
//
// A line that starts like a declaration ("-- KEYS", "-- ARGV",
// "-- Returns", "--   |") and does not parse is an error, so a typo never
// turns a declaration into prose.

// Script is one parsed .lua file.
type Script struct {
	Base    string // file name without .lua
	Ident   string // Go name
	Summary string // the header's first line
	Keys    []Param
	Args    []Param // the last may be a tail
	Cases   []Case
	Body    string
	Source  []byte
}

// Param is one KEYS or ARGV declaration.
type Param struct {
	Index  int
	Name   string
	Doc    string
	Tail   []string // element names of a tail; nil for a single value
	GoName string
}

// Case is one shape of the reply.
type Case struct {
	Name  string // "" when the script has one case
	Bare  *Elem  // a reply that is one value, not an array
	Elems []Elem
	Text  string
}

// Elem is one element of a case.
type Elem struct {
	Lit     string // Go expression of a literal to match, "" for a value
	LitKind string // "int" or "str"
	Name    string
	Type    string
}

var (
	declRe    = regexp.MustCompile(`^-- (KEYS|ARGV)\[(\d+)(\.\.)?\] ([a-z][A-Za-z0-9]*)(?: \{([a-z][A-Za-z0-9]*(?:, [a-z][A-Za-z0-9]*)+)\})?: (\S.*)$`)
	declStart = regexp.MustCompile(`^--\s*(KEYS|ARGV)\b`)
	retStart  = regexp.MustCompile(`^--\s*Returns\b`)
	retFirst  = regexp.MustCompile(`^-- Returns (.+)$`)
	retMore   = regexp.MustCompile(`^--\s+\| (.+)$`)
	moreStart = regexp.MustCompile(`^--\s+\|`)
	caseRe    = regexp.MustCompile(`^(?:([a-z][A-Za-z0-9]*) )?(\{.*\}|[a-z][A-Za-z0-9]*:[a-z]+)$`)
	valueRe   = regexp.MustCompile(`^([a-z][A-Za-z0-9]*):([a-z]+)$`)
	intLitRe  = regexp.MustCompile(`^-?[0-9]+$`)
	strLitRe  = regexp.MustCompile(`^'([A-Z_]+)'$`)
)

var replyTypes = map[string]bool{"int": true, "bool": true, "str": true, "hash": true, "idhashes": true, "raw": true}

// parseScript parses src, the file base.lua, and checks its header
// against its body.
func parseScript(base string, src []byte) (*Script, error) {
	ident, err := identifier(base)
	if err != nil {
		return nil, err
	}
	s := &Script{Base: base, Ident: ident, Source: src}
	fail := func(line int, format string, a ...any) error {
		return fmt.Errorf("gen: %s.lua:%d: %s", base, line, fmt.Sprintf(format, a...))
	}
	lines := strings.Split(string(src), "\n")
	n := 0
	for n < len(lines) && strings.HasPrefix(lines[n], "--") {
		n++
	}
	if n == 0 {
		return nil, fail(1, "must open with a header comment declaring its KEYS, ARGV and Returns")
	}
	var summary []string
	s.Body = strings.Join(lines[n:], "\n")
	names := map[string]int{}
	inReturns := false
	for i, ln := range lines[:n] {
		no := i + 1
		switch {
		case declStart.MatchString(ln):
			inReturns = false
			m := declRe.FindStringSubmatch(ln)
			if m == nil {
				return nil, fail(no, "bad declaration %q: want \"-- KEYS[i] name: doc\", \"-- ARGV[i] name: doc\" or \"-- ARGV[i..] name {a, b}: doc\"", ln)
			}
			idx, _ := strconv.Atoi(m[2])
			p := Param{Index: idx, Name: m[4], Doc: m[6], GoName: goName(m[4])}
			if (m[3] == "") != (m[5] == "") {
				return nil, fail(no, "%s[%d%s]: a tail (i..) and its {elements} go together", m[1], idx, m[3])
			}
			if m[5] != "" {
				p.Tail = strings.Split(m[5], ", ")
			}
			if prev, dup := names[p.Name]; dup {
				return nil, fail(no, "name %q already declared on line %d", p.Name, prev)
			}
			names[p.Name] = no
			list := &s.Args
			if m[1] == "KEYS" {
				list = &s.Keys
				if p.Tail != nil {
					return nil, fail(no, "KEYS cannot have a tail: a script's keys are fixed, for cluster routing")
				}
			}
			if want := len(*list) + 1; idx != want {
				return nil, fail(no, "%s[%d] declared where %s[%d] is next", m[1], idx, m[1], want)
			}
			if k := len(*list); k > 0 && (*list)[k-1].Tail != nil {
				return nil, fail(no, "%s[%d] follows the tail %s", m[1], idx, (*list)[k-1].Name)
			}
			*list = append(*list, p)
		case retStart.MatchString(ln):
			m := retFirst.FindStringSubmatch(ln)
			if m == nil || s.Cases != nil {
				return nil, fail(no, "bad or second Returns line %q", ln)
			}
			if err := s.addCases(m[1]); err != nil {
				return nil, fail(no, "%v", err)
			}
			inReturns = true
		case moreStart.MatchString(ln):
			m := retMore.FindStringSubmatch(ln)
			if m == nil || !inReturns {
				return nil, fail(no, "a \"|\" line must continue the Returns cases: %q", ln)
			}
			if err := s.addCases(m[1]); err != nil {
				return nil, fail(no, "%v", err)
			}
		default:
			inReturns = false
			if len(s.Keys)+len(s.Args)+len(s.Cases) == 0 {
				summary = append(summary, strings.TrimSpace(strings.TrimPrefix(ln, "--")))
			}
		}
	}
	s.Summary = strings.TrimPrefix(strings.Join(summary, " "), base+": ")
	if s.Cases == nil {
		return nil, fail(n, "the header declares no Returns")
	}
	if err := checkCases(s.Cases); err != nil {
		return nil, fail(n, "%v", err)
	}
	if err := checkBody(s); err != nil {
		return nil, fmt.Errorf("gen: %s.lua: %v", base, err)
	}
	return s, nil
}

// addCases parses "case | case ..." of a Returns line.
func (s *Script) addCases(text string) error {
	for _, alt := range strings.Split(text, " | ") {
		c, err := parseCase(strings.TrimSpace(alt))
		if err != nil {
			return err
		}
		s.Cases = append(s.Cases, c)
	}
	return nil
}

func parseCase(text string) (Case, error) {
	m := caseRe.FindStringSubmatch(text)
	if m == nil {
		return Case{}, fmt.Errorf("bad Returns case %q: want [name] {elements} or [name] name:type", text)
	}
	c := Case{Name: m[1], Text: m[2]}
	if !strings.HasPrefix(m[2], "{") {
		e, err := parseElem(m[2])
		if err != nil || e.Lit != "" {
			return Case{}, fmt.Errorf("bad Returns case %q: %v", text, err)
		}
		c.Bare = &e
		return c, nil
	}
	inner := strings.TrimSuffix(strings.TrimPrefix(m[2], "{"), "}")
	for _, part := range strings.Split(inner, ",") {
		e, err := parseElem(strings.TrimSpace(part))
		if err != nil {
			return Case{}, fmt.Errorf("bad Returns case %q: %v", text, err)
		}
		c.Elems = append(c.Elems, e)
	}
	return c, nil
}

func parseElem(s string) (Elem, error) {
	switch {
	case intLitRe.MatchString(s):
		return Elem{Lit: s, LitKind: "int"}, nil
	case strLitRe.MatchString(s):
		return Elem{Lit: strconv.Quote(strLitRe.FindStringSubmatch(s)[1]), LitKind: "str"}, nil
	}
	m := valueRe.FindStringSubmatch(s)
	if m == nil {
		return Elem{}, fmt.Errorf("element %q is neither a literal nor name:type", s)
	}
	if !replyTypes[m[2]] {
		return Elem{}, fmt.Errorf("element %q: unknown type %q", s, m[2])
	}
	return Elem{Name: m[1], Type: m[2]}, nil
}

// checkCases: several cases are each named, and a value named in two
// cases has one type, since it becomes one field of the reply.
func checkCases(cases []Case) error {
	types := map[string]string{}
	caseNames := map[string]bool{}
	for _, c := range cases {
		if len(cases) > 1 {
			if c.Name == "" {
				return fmt.Errorf("case %s: a reply with several cases names each", c.Text)
			}
			if c.Bare != nil {
				return fmt.Errorf("case %s: only a single-case reply may be a bare value", c.Text)
			}
		}
		if caseNames[c.Name] {
			return fmt.Errorf("case %q named twice", c.Name)
		}
		caseNames[c.Name] = true
		elems := c.Elems
		if c.Bare != nil {
			elems = []Elem{*c.Bare}
		}
		for _, e := range elems {
			if e.Lit != "" {
				continue
			}
			if t, ok := types[e.Name]; ok && t != e.Type {
				return fmt.Errorf("%s is %s in one case and %s in another", e.Name, t, e.Type)
			}
			types[e.Name] = e.Type
		}
	}
	return nil
}

var (
	keysUse  = regexp.MustCompile(`KEYS\[([^\]]*)\]`)
	argvUse  = regexp.MustCompile(`ARGV\[([^\]]*)\]`)
	indexLit = regexp.MustCompile(`^\s*([0-9]+)\s*$`)
)

// checkBody refuses a body that uses more or fewer KEYS or ARGV than the
// header declares (by the highest literal index), indexes KEYS by anything
// but a literal, or walks a declared tail from another index or stride.
func checkBody(s *Script) error {
	code := stripComments(s.Body)
	maxKeys := 0
	for _, m := range keysUse.FindAllStringSubmatch(code, -1) {
		lit := indexLit.FindStringSubmatch(m[1])
		if lit == nil {
			return fmt.Errorf("body indexes KEYS[%s]: only literal indexes, so the header fixes every key", m[1])
		}
		maxKeys = max(maxKeys, atoi(lit[1]))
	}
	if maxKeys != len(s.Keys) {
		return fmt.Errorf("header declares %d KEYS, body uses up to KEYS[%d]", len(s.Keys), maxKeys)
	}
	maxArgs := 0
	for _, m := range argvUse.FindAllStringSubmatch(code, -1) {
		if lit := indexLit.FindStringSubmatch(m[1]); lit != nil {
			maxArgs = max(maxArgs, atoi(lit[1]))
		}
	}
	fixed := len(s.Args)
	var tail *Param
	if fixed > 0 && s.Args[fixed-1].Tail != nil {
		tail = &s.Args[fixed-1]
		fixed--
	}
	if maxArgs != fixed {
		return fmt.Errorf("header declares %d fixed ARGV, body uses up to ARGV[%d]", fixed, maxArgs)
	}
	if tail != nil {
		loop := regexp.MustCompile(fmt.Sprintf(`\b%d\s*,\s*#ARGV\s*,\s*%d\b`, tail.Index, len(tail.Tail)))
		if !loop.MatchString(code) {
			return fmt.Errorf("header declares the tail %s at ARGV[%d..] in groups of %d, but the body has no loop \"%d, #ARGV, %d\"",
				tail.Name, tail.Index, len(tail.Tail), tail.Index, len(tail.Tail))
		}
	} else if strings.Contains(code, "#ARGV") {
		return fmt.Errorf("body reads #ARGV but the header declares no tail")
	}
	return nil
}

// stripComments drops Lua "--" comments outside string literals, so prose
// naming KEYS[9] does not count as a use.
func stripComments(src string) string {
	var b strings.Builder
	for _, ln := range strings.Split(src, "\n") {
		var quote byte
		cut := len(ln)
		for i := 0; i < len(ln); i++ {
			c := ln[i]
			switch {
			case quote != 0:
				if c == '\\' {
					i++
				} else if c == quote {
					quote = 0
				}
			case c == '\'' || c == '"':
				quote = c
			case c == '-' && i+1 < len(ln) && ln[i+1] == '-':
				cut = i
				i = len(ln)
			}
		}
		b.WriteString(ln[:cut])
		b.WriteByte('\n')
	}
	return b.String()
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
