package selector

import (
	"strings"
	"testing"
)

// FuzzParse: Parse never panics; what parses prints (String) to text
// that parses to a selector with the same text, matching the same label
// sets as the original.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"all()", "!all()", "", "rack == 'rack-1'", "!has(routeReflector)",
		"type in {'a', \"b\"} && !(x not in {}) || y contains 'z'",
		"a starts with 'x' || b ends with \"y\" && c != 'q'", "((has(a)))", "has(x",
		`msg == 'say "hi"'`, "zone in{'west','east'}",
	} {
		f.Add(s, "zone=west,rack=rack-1,a=x")
	}
	f.Fuzz(func(t *testing.T, s, labelSpec string) {
		sel, err := Parse(s)
		if err != nil {
			return
		}
		text := sel.String()
		again, err := Parse(text)
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not parse: %v", s, text, err)
		}
		if again.String() != text {
			t.Fatalf("String of %q: %q, then %q", s, text, again.String())
		}
		labels := map[string]string{}
		for _, kv := range strings.Split(labelSpec, ",") {
			k, v, _ := strings.Cut(kv, "=")
			labels[k] = v
		}
		for _, l := range []map[string]string{labels, nil} {
			if sel.Matches(l) != again.Matches(l) {
				t.Fatalf("%q and its String %q disagree on %v", s, text, l)
			}
		}
	})
}
