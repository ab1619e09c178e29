package vswitch

import (
	"time"

	"podnet/internal/packet"
)

// readLoop is the body of every port reader: read a batch into buffers
// with packet.Headroom in front, load the snapshots once, handle each
// packet, flush what the batch queued, count. It returns when read
// reports the device closed; other read errors are logged and retried
// after a pause, so a persistent error cannot spin a core.
//
// read fills bufs[i][packet.Headroom:] and sizes; handle gets packet i of
// the batch. Both are made once per reader, so the loop allocates
// nothing.
func (s *Switch) readLoop(p *port, batch int,
	read func(bufs [][]byte, sizes []int) (int, error),
	handle func(f *forwarder, i int, buf []byte, size int)) {
	s.log.Debug("reader started", "port", p.name)
	defer s.log.Debug("reader stopped", "port", p.name)
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	for i := range bufs {
		bufs[i] = make([]byte, packet.BufferSize)
	}
	f := newForwarder(s)
	for {
		n, err := read(bufs, sizes)
		if err != nil && n == 0 {
			if isClosed(err) {
				return
			}
			s.log.Warn("port read failed", "port", p.name, "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		f.begin()
		var bytes uint64
		for i := 0; i < n; i++ {
			bytes += uint64(sizes[i])
			handle(f, i, bufs[i], sizes[i])
		}
		f.end()
		p.c.rxFrames.Add(uint64(n))
		p.c.rxBytes.Add(bytes)
	}
}
