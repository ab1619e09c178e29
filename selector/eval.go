package selector

import (
	"slices"
	"strings"
)

// node is one expression of the parsed tree.
type node interface {
	Selector
	// write appends the canonical text of the node.
	write(b *strings.Builder)
}

type all struct{}

func (all) Matches(map[string]string) bool { return true }
func (all) write(b *strings.Builder)       { b.WriteString("all()") }
func (n all) String() string               { return "all()" }

type has string

func (k has) Matches(labels map[string]string) bool { _, ok := labels[string(k)]; return ok }
func (k has) write(b *strings.Builder)              { b.WriteString("has(" + string(k) + ")") }
func (k has) String() string                        { return text(k) }

type opKind int

const (
	opEq opKind = iota
	opContains
	opStartsWith
	opEndsWith
)

func (o opKind) String() string {
	return [...]string{"==", "contains", "starts with", "ends with"}[o]
}

// compare is k <op> 'v'; it never matches when k is absent. k != 'v' is
// not{compare{k, opEq, v}}, which matches an absent k as Calico's does.
type compare struct {
	k  string
	op opKind
	v  string
}

func (c compare) Matches(labels map[string]string) bool {
	got, ok := labels[c.k]
	if !ok {
		return false
	}
	switch c.op {
	case opEq:
		return got == c.v
	case opContains:
		return strings.Contains(got, c.v)
	case opStartsWith:
		return strings.HasPrefix(got, c.v)
	}
	return strings.HasSuffix(got, c.v)
}

func (c compare) write(b *strings.Builder) {
	b.WriteString(c.k + " " + c.op.String() + " ")
	quote(b, c.v)
}

func (c compare) String() string { return text(c) }

// inSet is k in {...}; k not in {...} is not{inSet}.
type inSet struct {
	k   string
	set []string
}

func (s inSet) Matches(labels map[string]string) bool {
	got, ok := labels[s.k]
	return ok && slices.Contains(s.set, got)
}

func (s inSet) write(b *strings.Builder) {
	b.WriteString(s.k + " in ")
	writeSet(b, s.set)
}

func (s inSet) String() string { return text(s) }

func writeSet(b *strings.Builder, set []string) {
	b.WriteString("{")
	for i, v := range set {
		if i > 0 {
			b.WriteString(", ")
		}
		quote(b, v)
	}
	b.WriteString("}")
}

type not struct{ n node }

func (x not) Matches(labels map[string]string) bool { return !x.n.Matches(labels) }

// write prints the operator forms != and not in rather than !(...).
func (x not) write(b *strings.Builder) {
	switch n := x.n.(type) {
	case compare:
		if n.op == opEq {
			b.WriteString(n.k + " != ")
			quote(b, n.v)
			return
		}
	case inSet:
		b.WriteString(n.k + " not in ")
		writeSet(b, n.set)
		return
	}
	b.WriteString("!")
	group(b, x.n, false)
}

func (x not) String() string { return text(x) }

type and []node

func (a and) Matches(labels map[string]string) bool {
	for _, n := range a {
		if !n.Matches(labels) {
			return false
		}
	}
	return true
}

func (a and) write(b *strings.Builder) {
	for i, n := range a {
		if i > 0 {
			b.WriteString(" && ")
		}
		group(b, n, true)
	}
}

func (a and) String() string { return text(a) }

type or []node

func (o or) Matches(labels map[string]string) bool {
	for _, n := range o {
		if n.Matches(labels) {
			return true
		}
	}
	return false
}

func (o or) write(b *strings.Builder) {
	for i, n := range o {
		if i > 0 {
			b.WriteString(" || ")
		}
		n.write(b) // && binds tighter than ||: no parentheses needed
	}
}

func (o or) String() string { return text(o) }

// group writes n, in parentheses when it is an || (always needed inside
// && and !) or, unless andOK, an &&.
func group(b *strings.Builder, n node, andOK bool) {
	_, isOr := n.(or)
	_, isAnd := n.(and)
	if isOr || (isAnd && !andOK) {
		b.WriteString("(")
		n.write(b)
		b.WriteString(")")
		return
	}
	n.write(b)
}

// quote writes v in double quotes, or in single quotes when it holds a
// double quote (a parsed string never holds both).
func quote(b *strings.Builder, v string) {
	q := `"`
	if strings.Contains(v, `"`) {
		q = `'`
	}
	b.WriteString(q + v + q)
}

func text(n node) string {
	var b strings.Builder
	n.write(&b)
	return b.String()
}
