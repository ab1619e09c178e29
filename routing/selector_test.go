package routing

import "testing"

func TestSelectorMatches(t *testing.T) {
	labels := map[string]string{"rack": "r1", "role": "rr", "empty": ""}
	tests := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"all()", true},
		{"  all()  ", true},
		{"rack == 'r1'", true},
		{`rack == "r1"`, true},
		{"rack == 'r2'", false},
		{"rack != 'r2'", true},
		{"rack != 'r1'", false},
		{"missing != 'x'", true},
		{"has(role)", true},
		{"has( role )", true},
		{"has(zone)", false},
		{"has(empty)", true},
		{"rack == 'r1' && role == 'rr'", true},
		{"rack == 'r1' && role == 'client'", false},
		{"all() && has(rack)", true},
		{"rack in {'r1', 'r2'}", true},
		{"!has(rack)", false},
		{"!has(routeReflector)", true}, // Calico's route-reflector example
		{"role == 'rr' || rack == 'r9'", true},
		{"rack ==", false}, // does not parse: matches nothing
	}
	for _, tt := range tests {
		if got := SelectorMatches(tt.sel, labels); got != tt.want {
			t.Errorf("SelectorMatches(%q): got %v, want %v", tt.sel, got, tt.want)
		}
	}
}
