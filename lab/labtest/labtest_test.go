package labtest

import (
	"testing"

	"podnet/lab"
)

func TestName(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		n := Name()
		if err := lab.ValidateName(n); err != nil {
			t.Fatalf("Name() = %q: %v", n, err)
		}
		if len(n) != 6 {
			t.Errorf("Name() = %q: got length %d, want 6", n, len(n))
		}
		seen[n] = true
	}
	// 36^5 names: 100 draws collide with probability ~1e-4.
	if len(seen) < 99 {
		t.Errorf("Name(): got %d distinct names in 100 draws", len(seen))
	}
}
