package packet

import "testing"

func TestBufferSize(t *testing.T) {
	if BufferSize%64 != 0 {
		t.Errorf("BufferSize %d is not a multiple of 64", BufferSize)
	}
	if min := Headroom + VirtioNetHdrLen + MaxFrameLen; BufferSize < min || BufferSize-min >= 64 {
		t.Errorf("BufferSize %d, want the next multiple of 64 ≥ %d", BufferSize, min)
	}
}

func TestPoolAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops Puts at random under -race")
	}
	p := NewPool()
	p.Put(p.Get()) // warm
	got := testing.AllocsPerRun(1000, func() {
		b := p.Get()
		b[Headroom] = 1
		p.Put(b)
	})
	if got != 0 {
		t.Errorf("Get/Put allocs: got %v, want 0", got)
	}
}

func TestPoolPutNil(t *testing.T) {
	p := NewPool()
	p.Put(nil) // must not poison the pool with a nil *Buffer
	if b := p.Get(); b == nil {
		t.Fatal("Get after Put(nil) returned nil")
	}
}
