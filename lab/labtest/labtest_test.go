package labtest

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
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

func TestCrashReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "daemon.log")
	log := "time=1 level=INFO msg=up\n==================\nWARNING: DATA RACE\nRead at 0x1 by goroutine 7:\n  main.f()\n" +
		strings.Repeat("  more\n", 100)
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	got := crashReport(path, 3)
	if want := []string{"WARNING: DATA RACE", "Read at 0x1 by goroutine 7:", "  main.f()"}; !slices.Equal(got, want) {
		t.Errorf("race: got %q, want %q", got, want)
	}
	if err := os.WriteFile(path, []byte("a\npanic: boom\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := crashReport(path, 80); !slices.Equal(got, []string{"panic: boom"}) {
		t.Errorf("panic: got %q", got)
	}
	if err := os.WriteFile(path, []byte("level=ERROR msg=\"panic: not one\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := crashReport(path, 80); got != nil {
		t.Errorf("no crash: got %q", got)
	}
}
