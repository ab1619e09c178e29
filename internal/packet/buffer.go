package packet

import "sync"

// Implementation constants for the buffers the data path reads into.
const (
	// Headroom is reserved before each frame so that a virtio-net header
	// and outer encapsulation headers (VXLAN: 14+20+8+8 = 50 bytes, IPIP:
	// 20) can be prepended in place instead of copying the frame.
	Headroom = 128

	// MaxFrameLen is the largest Ethernet frame the switch handles: a full
	// 64 KiB IPv4 GSO superframe behind an Ethernet header.
	MaxFrameLen = 65535 + EthernetHeaderLen

	// BufferSize is one pooled buffer: headroom, virtio-net header and the
	// largest frame, rounded up to a multiple of 64 bytes (a cache line) so
	// consecutive buffers do not share lines.
	BufferSize = (Headroom + VirtioNetHdrLen + MaxFrameLen + 63) &^ 63
)

// Buffer is one packet buffer. Fixed-size arrays let the pool hand out
// pointers without slice headers escaping per packet.
type Buffer [BufferSize]byte

// Pool recycles Buffers. The zero value is not usable; call NewPool.
type Pool struct {
	p sync.Pool
}

// NewPool returns an empty pool that allocates Buffers on demand.
func NewPool() *Pool {
	return &Pool{p: sync.Pool{New: func() any { return new(Buffer) }}}
}

// Get returns a buffer. Its contents are whatever the last user left in it:
// clearing 64 KiB per packet would cost more than the copy it precedes.
func (p *Pool) Get() *Buffer { return p.p.Get().(*Buffer) }

// Put returns b to the pool. The caller must not use b afterwards. Buffer
// holds no pointers, so there is nothing to clear for use-after-free
// hygiene.
func (p *Pool) Put(b *Buffer) {
	if b != nil {
		p.p.Put(b)
	}
}
