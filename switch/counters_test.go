package vswitch

import (
	"errors"
	"testing"
)

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

// seqDropper answers QueueDrops from a script: a count, or an error.
type seqDropper struct {
	counts []uint64
	errs   []error
	i      int
}

func (d *seqDropper) QueueDrops() (uint64, error) {
	i := min(d.i, len(d.counts)-1)
	d.i++
	return d.counts[i], d.errs[i]
}

// TestQueueDropsNeverGoBack: queue-full counts from the attach, adds the
// devices up, comes through a 32-bit socket counter's wrap, and keeps its
// last value while a device cannot be read, so that a scraper never sees
// it go back.
func TestQueueDropsNeverGoBack(t *testing.T) {
	fail := errors.New("renamed meanwhile")
	tap := &seqDropper{counts: []uint64{10, 15, 0, 19}, errs: []error{nil, nil, fail, nil}}
	sock := &seqDropper{counts: []uint64{1<<32 - 3, 2, 7, 7}, errs: []error{nil, nil, nil, nil}}
	var plain struct{} // a device that cannot say
	q, err := newQueueDrops[any](tap, plain, sock)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []uint64{5 + 5, 5 + 5, 9 + 10} {
		s := PortStats{Drops: map[string]uint64{}}
		q.addTo(&s)
		if got := s.Drops[DropQueueFull.String()]; got != want {
			t.Errorf("read %d: queue-full %d, want %d", i, got, want)
		}
	}
	if _, err := newQueueDrops(&seqDropper{counts: []uint64{0}, errs: []error{fail}}); !errors.Is(err, fail) {
		t.Errorf("a device that cannot be read at attach: %v, want its error", err)
	}
}
