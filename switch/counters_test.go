package vswitch

import "testing"

// TestDropNames keeps the names in step with the reasons: each has one,
// and no two share it (they are counter names users read).
func TestDropNames(t *testing.T) {
	seen := map[string]DropReason{}
	for r := DropReason(0); r < numDropReasons; r++ {
		n := r.String()
		if n == "" {
			t.Errorf("drop reason %d has no name", r)
		}
		if o, dup := seen[n]; dup {
			t.Errorf("drop reasons %d and %d are both named %q", o, r, n)
		}
		seen[n] = r
	}
}
