// Package selector is Calico's label selector language, as podnet uses it
// in IPPool.nodeSelector and BGPPeer.nodeSelector/peerSelector:
//
//	all()                      every label set
//	k == 'v'   k != 'v'        value equal / not equal (!= also matches when k is absent)
//	has(k)     !has(k)         k present / absent
//	k in {'a', 'b'}            k present with one of the values
//	k not in {'a', 'b'}        k absent, or with none of the values
//	k contains 's'             k present and its value contains s
//	k starts with 's'          ... begins with s
//	k ends with 's'            ... ends with s
//	!e   e && f   e || f   (e) negation, and, or (&& binds tighter), grouping
//
// Strings are quoted with ' or " and hold any character but their quote;
// there are no escapes. Label keys are runs of [A-Za-z0-9_./-]. Blanks
// are spaces and tabs. The empty selector is all(). Calico's global() is
// for network policy namespace selectors and is refused here, like every
// other thing the parser does not understand, with the position where it
// stopped.
//
// A selector is parsed once into a tree (Parse) and then evaluated
// against any number of label maps (Matches) without allocating.
package selector

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Selector is a parsed selector expression. It is immutable and safe for
// concurrent use.
type Selector interface {
	// Matches reports whether labels satisfy the selector. A nil map is
	// an empty label set.
	Matches(labels map[string]string) bool
	// String is the selector in canonical form: Parse(s.String()) gives a
	// selector with the same String and the same matches.
	String() string
}

// Error is a selector that does not parse: Pos is the 1-based character
// position in the input where the parser stopped, Msg what it wanted.
type Error struct {
	Input string
	Pos   int
	Msg   string
}

func (e *Error) Error() string {
	return fmt.Sprintf("invalid selector at position %d: %s", e.Pos, e.Msg)
}

// MaxLength is the longest selector Parse accepts, in bytes (Calico's
// limit on nodeSelector).
const MaxLength = 1024

// Parse parses s. The error, if any, is an *Error.
func Parse(s string) (Selector, error) {
	if len(s) > MaxLength {
		return nil, &Error{Input: s, Pos: utf8.RuneCountInString(s[:MaxLength]) + 1, Msg: fmt.Sprintf("selector is longer than %d characters", MaxLength)}
	}
	p := parser{in: s}
	p.skipBlanks()
	if p.pos == len(p.in) {
		return all{}, nil
	}
	n, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	p.skipBlanks()
	if p.pos != len(p.in) {
		return nil, p.errorf("unexpected %s after a complete expression; join expressions with && or ||", p.describe())
	}
	return n, nil
}

// MustParse is Parse for selectors known to be valid (constants); it
// panics on error.
func MustParse(s string) Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// All is the selector that matches every label set.
var All Selector = all{}

type parser struct {
	in  string
	pos int // byte offset of the next unread character
}

func (p *parser) errorf(format string, args ...any) error {
	return &Error{Input: p.in, Pos: utf8.RuneCountInString(p.in[:p.pos]) + 1, Msg: fmt.Sprintf(format, args...)}
}

// describe names what is at the current position, for errors.
func (p *parser) describe() string {
	if p.pos >= len(p.in) {
		return "end of selector"
	}
	r, _ := utf8.DecodeRuneInString(p.in[p.pos:])
	return fmt.Sprintf("%q", r)
}

func (p *parser) skipBlanks() {
	for p.pos < len(p.in) && (p.in[p.pos] == ' ' || p.in[p.pos] == '\t') {
		p.pos++
	}
}

// peek skips blanks and reports whether the input continues with tok.
func (p *parser) peek(tok string) bool {
	p.skipBlanks()
	return strings.HasPrefix(p.in[p.pos:], tok)
}

func isKeyChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '/' || c == '-'
}

// key reads a label key at the current position ("" if none).
func (p *parser) key() string {
	start := p.pos
	for p.pos < len(p.in) && isKeyChar(p.in[p.pos]) {
		p.pos++
	}
	return p.in[start:p.pos]
}

// word reports whether the input continues with keyword w. As in
// Calico, no blank is needed after an operator word ("a in{'x'}"): after
// a label only an operator can follow, so there is no ambiguity.
func (p *parser) word(w string) bool { return strings.HasPrefix(p.in[p.pos:], w) }

// parseOr: and ('||' and)*.
func (p *parser) parseOr() (node, error) {
	var terms []node
	for {
		n, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		terms = append(terms, flatten[or](n)...)
		if !p.peek("||") {
			break
		}
		p.pos += 2
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return or(terms), nil
}

// parseAnd: unary ('&&' unary)*.
func (p *parser) parseAnd() (node, error) {
	var terms []node
	for {
		n, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		terms = append(terms, flatten[and](n)...)
		if !p.peek("&&") {
			break
		}
		p.pos += 2
	}
	if len(terms) == 1 {
		return terms[0], nil
	}
	return and(terms), nil
}

// flatten returns the operands of n if it is already a T (an and inside
// an and, from parentheses), else n: a && (b && c) is a && b && c.
func flatten[T ~[]node](n node) []node {
	if t, ok := n.(T); ok {
		return t
	}
	return []node{n}
}

// parseUnary: '!' unary | '(' or ')' | all() | has(k) | k op value.
func (p *parser) parseUnary() (node, error) {
	p.skipBlanks()
	switch {
	case p.pos >= len(p.in):
		return nil, p.errorf("expected an expression, found end of selector")
	case p.in[p.pos] == '!' && !strings.HasPrefix(p.in[p.pos:], "!="):
		p.pos++
		n, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		if x, ok := n.(not); ok {
			return x.n, nil // !!e is e
		}
		return not{n}, nil
	case p.in[p.pos] == '(':
		p.pos++
		n, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if !p.peek(")") {
			return nil, p.errorf("expected ')' to close the '(', found %s", p.describe())
		}
		p.pos++
		return n, nil
	case strings.HasPrefix(p.in[p.pos:], "all("):
		p.pos += len("all(")
		if !p.peek(")") {
			return nil, p.errorf("expected ')' after all(, found %s", p.describe())
		}
		p.pos++
		return all{}, nil
	case strings.HasPrefix(p.in[p.pos:], "has("):
		p.pos += len("has(")
		p.skipBlanks()
		k := p.key()
		if k == "" {
			return nil, p.errorf("expected a label name in has(), found %s", p.describe())
		}
		if !p.peek(")") {
			return nil, p.errorf("expected ')' after has(%s, found %s", k, p.describe())
		}
		p.pos++
		return has(k), nil
	case strings.HasPrefix(p.in[p.pos:], "global("):
		return nil, p.errorf("global() selects host endpoints in Calico network policy; it has no meaning for node selectors")
	}
	k := p.key()
	if k == "" {
		return nil, p.errorf("expected a label name, all(), has(, ! or (, found %s", p.describe())
	}
	return p.parseOperation(k)
}

// parseOperation parses what follows label key k.
func (p *parser) parseOperation(k string) (node, error) {
	p.skipBlanks()
	var op opKind
	ne := false
	switch rest := p.in[p.pos:]; {
	case strings.HasPrefix(rest, "=="):
		op, p.pos = opEq, p.pos+2
	case strings.HasPrefix(rest, "!="):
		op, ne, p.pos = opEq, true, p.pos+2
	case p.word("in"):
		p.pos += len("in")
		set, err := p.parseSet()
		if err != nil {
			return nil, err
		}
		return inSet{k: k, set: set}, nil
	case p.word("not"):
		p.pos += len("not")
		p.skipBlanks()
		if !p.word("in") {
			return nil, p.errorf("expected 'in' after 'not', found %s", p.describe())
		}
		p.pos += len("in")
		set, err := p.parseSet()
		if err != nil {
			return nil, err
		}
		return not{inSet{k: k, set: set}}, nil
	case p.word("contains"):
		op, p.pos = opContains, p.pos+len("contains")
	case p.word("starts"), p.word("ends"):
		w := "starts"
		op = opStartsWith
		if p.word("ends") {
			w, op = "ends", opEndsWith
		}
		p.pos += len(w)
		p.skipBlanks()
		if !p.word("with") {
			return nil, p.errorf("expected 'with', found %s", p.describe())
		}
		p.pos += len("with")
	default:
		return nil, p.errorf("expected an operator (==, !=, in, not in, contains, starts with, ends with) after label %q, found %s", k, p.describe())
	}
	v, err := p.parseString()
	if err != nil {
		return nil, err
	}
	if ne {
		return not{compare{k: k, op: opEq, v: v}}, nil
	}
	return compare{k: k, op: op, v: v}, nil
}

// parseString reads a quoted string: '...' or "...".
func (p *parser) parseString() (string, error) {
	p.skipBlanks()
	if p.pos >= len(p.in) || (p.in[p.pos] != '\'' && p.in[p.pos] != '"') {
		return "", p.errorf("expected a quoted string ('v' or \"v\"), found %s", p.describe())
	}
	q := p.in[p.pos]
	end := strings.IndexByte(p.in[p.pos+1:], q)
	if end < 0 {
		return "", p.errorf("unterminated string: no closing %c", q)
	}
	v := p.in[p.pos+1 : p.pos+1+end]
	p.pos += end + 2
	return v, nil
}

// parseSet reads { 'a', 'b', ... } (possibly empty).
func (p *parser) parseSet() ([]string, error) {
	if !p.peek("{") {
		return nil, p.errorf("expected '{' to start a set of strings, found %s", p.describe())
	}
	p.pos++
	var set []string
	if p.peek("}") {
		p.pos++
		return set, nil
	}
	for {
		v, err := p.parseString()
		if err != nil {
			return nil, err
		}
		set = append(set, v)
		switch {
		case p.peek(","):
			p.pos++
		case p.peek("}"):
			p.pos++
			return set, nil
		default:
			return nil, p.errorf("expected ',' or '}' in a set of strings, found %s", p.describe())
		}
	}
}
