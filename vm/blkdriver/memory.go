package blkdriver

import (
	"fmt"
	"slices"
	"sync"
)

// Region is a piece of guest memory: its guest-physical address and the
// driver's view of it.
type Region struct {
	GPA uint64
	B   []byte
}

// Sub is the part of r from off, n bytes long.
func (r Region) Sub(off, n int) Region { return Region{GPA: r.GPA + uint64(off), B: r.B[off : off+n]} }

// Memory is the guest's memory and the guest's allocator of it: every
// ring and buffer the driver uses is allocated here, so the device finds
// it at its GPA. Safe for concurrent use.
type Memory struct {
	mem  []byte
	base uint64

	mu   sync.Mutex
	free []span // sorted by offset, coalesced
}

type span struct{ off, n uint64 }

// NewMemory manages mem, which the device sees at guest-physical address
// base.
func NewMemory(mem []byte, base uint64) *Memory {
	return &Memory{mem: mem, base: base, free: []span{{0, uint64(len(mem))}}}
}

// Bytes is the whole of guest memory.
func (m *Memory) Bytes() []byte { return m.mem }

// Alloc returns n bytes aligned to align (a power of two), zeroed.
func (m *Memory) Alloc(n, align int) (Region, error) {
	if n <= 0 || align <= 0 || align&(align-1) != 0 {
		return Region{}, fmt.Errorf("blkdriver: bad allocation of %d bytes aligned to %d", n, align)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	a := uint64(align)
	for i, s := range m.free {
		start := (m.base + s.off + a - 1) &^ (a - 1)
		off := start - m.base
		if off+uint64(n) > s.off+s.n {
			continue
		}
		var rest []span
		if off > s.off {
			rest = append(rest, span{s.off, off - s.off})
		}
		if end := off + uint64(n); end < s.off+s.n {
			rest = append(rest, span{end, s.off + s.n - end})
		}
		m.free = slices.Replace(m.free, i, i+1, rest...)
		b := m.mem[off : off+uint64(n) : off+uint64(n)]
		clear(b)
		return Region{GPA: start, B: b}, nil
	}
	return Region{}, fmt.Errorf("%w: %d bytes wanted", ErrNoMemory, n)
}

// Free gives r back.
func (m *Memory) Free(r Region) {
	if len(r.B) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	s := span{r.GPA - m.base, uint64(len(r.B))}
	i, _ := slices.BinarySearchFunc(m.free, s.off, func(f span, off uint64) int {
		switch {
		case f.off < off:
			return -1
		case f.off > off:
			return 1
		}
		return 0
	})
	m.free = slices.Insert(m.free, i, s)
	// Coalesce with the neighbours.
	if i+1 < len(m.free) && m.free[i].off+m.free[i].n == m.free[i+1].off {
		m.free[i].n += m.free[i+1].n
		m.free = slices.Delete(m.free, i+1, i+2)
	}
	if i > 0 && m.free[i-1].off+m.free[i-1].n == m.free[i].off {
		m.free[i-1].n += m.free[i].n
		m.free = slices.Delete(m.free, i, i+1)
	}
}

// FreeBytes is how much memory is unallocated.
func (m *Memory) FreeBytes() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n uint64
	for _, s := range m.free {
		n += s.n
	}
	return n
}
