package selector

import (
	"errors"
	"strings"
	"testing"
)

// Label sets the table evaluates against.
var (
	none     = map[string]string{}
	west     = map[string]string{"zone": "west", "rack": "rack-1"}
	east     = map[string]string{"zone": "east", "rack": "rack-2", "route-reflector": "true"}
	rr       = map[string]string{"routeReflector": "true", "zone": "west"}
	frontend = map[string]string{"type": "frontend", "app": "web-server-1", "env": "production"}
	backend  = map[string]string{"type": "backend", "app": "db", "env": "staging"}
	k8s      = map[string]string{"kubernetes.io/hostname": "node-1", "topology.kubernetes.io/zone": "us-east-1a"}
)

type want struct {
	labels map[string]string
	match  bool
}

// TestMatches holds the examples of Calico's documentation (the selector
// operator table, the IP pool, BGP peer and route reflector pages) and
// what they select.
func TestMatches(t *testing.T) {
	tests := []struct {
		sel       string
		canonical string
		cases     []want
	}{
		// all(), and the empty selector, match everything; !all() nothing
		// (a pool for manual assignment only).
		{"all()", "all()", []want{{none, true}, {west, true}, {nil, true}}},
		{"", "all()", []want{{none, true}, {east, true}}},
		{"  all( )  ", "all()", []want{{none, true}}},
		{"!all()", "!all()", []want{{none, false}, {west, false}}},
		// k == 'v': the label with that value.
		{"rack == 'rack-1'", `rack == "rack-1"`, []want{{west, true}, {east, false}, {none, false}}},
		{`zone == "west"`, `zone == "west"`, []want{{west, true}, {rr, true}, {east, false}}},
		{"route-reflector == 'true'", `route-reflector == "true"`, []want{{east, true}, {rr, false}}},
		{"kubernetes.io/hostname == 'node-1'", `kubernetes.io/hostname == "node-1"`, []want{{k8s, true}, {west, false}}},
		{"zone==''", `zone == ""`, []want{{none, false}, {map[string]string{"zone": ""}, true}}},
		// k != 'v': without the label, or with another value.
		{"zone != 'west'", `zone != "west"`, []want{{west, false}, {east, true}, {none, true}}},
		// has(k) and !has(k): the route reflector example.
		{"has(routeReflector)", "has(routeReflector)", []want{{rr, true}, {west, false}}},
		{"!has(routeReflector)", "!has(routeReflector)", []want{{rr, false}, {west, true}, {none, true}}},
		{"has( route-reflector )", "has(route-reflector)", []want{{east, true}, {west, false}}},
		{"has(zone) && !has(route-reflector)", "has(zone) && !has(route-reflector)", []want{{west, true}, {east, false}, {none, false}}},
		// in and not in.
		{"type in { 'frontend', 'backend' }", `type in {"frontend", "backend"}`, []want{{frontend, true}, {backend, true}, {west, false}}},
		{"type not in { 'frontend' }", `type not in {"frontend"}`, []want{{frontend, false}, {backend, true}, {none, true}}},
		{"zone in {}", "zone in {}", []want{{west, false}, {none, false}}},
		{"zone not in {}", "zone not in {}", []want{{west, true}, {none, true}}},
		{`zone in{"west","east"}`, `zone in {"west", "east"}`, []want{{west, true}, {east, true}, {frontend, false}}},
		// contains, starts with, ends with.
		{"app contains 'server'", `app contains "server"`, []want{{frontend, true}, {backend, false}, {none, false}}},
		{"app starts with 'web'", `app starts with "web"`, []want{{frontend, true}, {backend, false}}},
		{"app ends with '-1'", `app ends with "-1"`, []want{{frontend, true}, {backend, false}, {none, false}}},
		{"topology.kubernetes.io/zone starts with 'us-east'", `topology.kubernetes.io/zone starts with "us-east"`, []want{{k8s, true}, {west, false}}},
		{"app contains ''", `app contains ""`, []want{{frontend, true}, {none, false}}},
		// &&, ||, ! and parentheses; && binds tighter than ||.
		{"type == 'frontend' && env == 'production'", `type == "frontend" && env == "production"`, []want{{frontend, true}, {backend, false}}},
		{"type == 'frontend' || env == 'staging'", `type == "frontend" || env == "staging"`, []want{{frontend, true}, {backend, true}, {west, false}}},
		{"zone == 'east' || zone == 'west' && rack == 'rack-9'", `zone == "east" || zone == "west" && rack == "rack-9"`, []want{{east, true}, {west, false}}},
		{"(zone == 'east' || zone == 'west') && rack == 'rack-1'", `(zone == "east" || zone == "west") && rack == "rack-1"`, []want{{west, true}, {east, false}}},
		{"!(zone == 'west' && has(routeReflector))", `!(zone == "west" && has(routeReflector))`, []want{{rr, false}, {west, true}, {none, true}}},
		{"!(zone == 'west')", `zone != "west"`, []want{{west, false}, {none, true}}},
		{"!!has(zone)", "has(zone)", []want{{west, true}, {none, false}}},
		{"!zone in {'west'}", `zone not in {"west"}`, []want{{west, false}, {east, true}}},
		{"((has(a)))", "has(a)", []want{{map[string]string{"a": ""}, true}}},
		{"has(a) && (has(b) && has(c))", "has(a) && has(b) && has(c)", []want{{map[string]string{"a": "", "b": "", "c": ""}, true}, {map[string]string{"a": "", "b": ""}, false}}},
		{"!(has(a) || has(b))", "!(has(a) || has(b))", []want{{none, true}, {map[string]string{"b": "1"}, false}}},
		// Quotes: either kind, holding the other.
		{`msg == 'say "hi"'`, `msg == 'say "hi"'`, []want{{map[string]string{"msg": `say "hi"`}, true}}},
		{`msg == "it's"`, `msg == "it's"`, []want{{map[string]string{"msg": "it's"}, true}}},
		{"\tzone\t==\t'west'\t", `zone == "west"`, []want{{west, true}}},
		// Labels named like keywords are labels.
		{"has == 'x' && all == 'y' && in == 'z'", `has == "x" && all == "y" && in == "z"`, []want{{map[string]string{"has": "x", "all": "y", "in": "z"}, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.sel, func(t *testing.T) {
			sel, err := Parse(tt.sel)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.sel, err)
			}
			if got := sel.String(); got != tt.canonical {
				t.Errorf("String() = %q, want %q", got, tt.canonical)
			}
			again, err := Parse(sel.String())
			if err != nil {
				t.Fatalf("Parse(String()) = %v", err)
			}
			for _, c := range tt.cases {
				if got := sel.Matches(c.labels); got != c.match {
					t.Errorf("Matches(%v) = %v, want %v", c.labels, got, c.match)
				}
				if got := again.Matches(c.labels); got != c.match {
					t.Errorf("reparsed %q: Matches(%v) = %v, want %v", sel.String(), c.labels, got, c.match)
				}
			}
		})
	}
}

// TestParseErrors: what the parser does not understand is refused, with
// the position where it stopped.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		sel  string
		pos  int
		want string
	}{
		{"has(x", 6, "expected ')' after has(x"},
		{"has()", 5, "expected a label name in has()"},
		{"all(x)", 5, "expected ')' after all("},
		{"zone = 'west'", 6, "expected an operator"},
		{"zone == west", 9, "expected a quoted string"},
		{"zone == 'west", 9, "unterminated string"},
		{`zone == "west`, 9, "unterminated string"},
		{"zone", 5, "expected an operator"},
		{"zone == 'a' zone == 'b'", 13, "after a complete expression"},
		{"zone == 'a' &", 13, "after a complete expression"},
		{"zone == 'a' &&", 15, "expected an expression, found end of selector"},
		{"|| has(a)", 1, "expected a label name"},
		{"(has(a)", 8, "expected ')' to close the '('"},
		{"has(a))", 7, "after a complete expression"},
		{"zone in 'a'", 9, "expected '{'"},
		{"zone in {'a' 'b'}", 14, "expected ',' or '}'"},
		{"zone in {'a',}", 14, "expected a quoted string"},
		{"zone not 'a'", 10, "expected 'in' after 'not'"},
		{"zone starts 'a'", 13, "expected 'with'"},
		{"zone like 'a'", 6, "expected an operator"},
		{"global()", 1, "global()"},
		{"zone == 'a'\n", 12, "after a complete expression"},
		{"zöne == 'a'", 2, "expected an operator"},
		{"!", 2, "expected an expression"},
		{"zone =~ 'a'", 6, "expected an operator"},
		{strings.Repeat("a", MaxLength+1), MaxLength + 1, "longer than 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.sel, func(t *testing.T) {
			_, err := Parse(tt.sel)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Parse(%q) = %v, want an *Error", tt.sel, err)
			}
			if e.Pos != tt.pos || !strings.Contains(e.Msg, tt.want) {
				t.Errorf("Parse(%q) = %q at %d, want %q at %d", tt.sel, e.Msg, e.Pos, tt.want, tt.pos)
			}
			if !strings.Contains(err.Error(), "position") {
				t.Errorf("error %q does not give the position", err)
			}
		})
	}
}

// TestMatchesAllocs: evaluation does not allocate.
func TestMatchesAllocs(t *testing.T) {
	sel := MustParse("(zone in {'east', 'west'} || has(rr)) && !has(routeReflector) && app starts with 'web' && env != 'dev'")
	labels := map[string]string{"zone": "west", "app": "web-1", "env": "prod"}
	if !sel.Matches(labels) {
		t.Fatal("want a match")
	}
	if n := testing.AllocsPerRun(100, func() { sel.Matches(labels) }); n != 0 {
		t.Errorf("Matches allocates %v times per call, want 0", n)
	}
}

func BenchmarkMatches(b *testing.B) {
	sel := MustParse("(zone in {'east', 'west'} || has(rr)) && !has(routeReflector) && app starts with 'web'")
	labels := map[string]string{"zone": "west", "app": "web-1"}
	for b.Loop() {
		sel.Matches(labels)
	}
}
