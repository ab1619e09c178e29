package queuedrops

import (
	"errors"
	"testing"
)

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

// TestCountNeverGoesBack: a Counter counts from Follow, adds the devices
// up, comes through a 32-bit socket counter's wrap, and keeps its last
// value while a device cannot be read, so that a scraper never sees it
// go back.
func TestCountNeverGoesBack(t *testing.T) {
	fail := errors.New("renamed meanwhile")
	tap := &seqDropper{counts: []uint64{10, 15, 0, 19}, errs: []error{nil, nil, fail, nil}}
	sock := &seqDropper{counts: []uint64{1<<32 - 3, 2, 7, 7}, errs: []error{nil, nil, nil, nil}}
	var plain struct{} // a device that cannot say
	c, err := Follow[any](tap, plain, sock)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []uint64{5 + 5, 5 + 5, 9 + 10} {
		if got := c.Count(); got != want {
			t.Errorf("read %d: count %d, want %d", i, got, want)
		}
	}
	if _, err := Follow(&seqDropper{counts: []uint64{0}, errs: []error{fail}}); !errors.Is(err, fail) {
		t.Errorf("a device that cannot be read at Follow: %v, want its error", err)
	}
	var none *Counter
	if got := none.Count(); got != 0 {
		t.Errorf("nil Counter: %d, want 0", got)
	}
}
