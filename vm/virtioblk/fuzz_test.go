package virtioblk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"minivmm/block"
	"minivmm/vm/virtq"
)

// memDisk is a disk in memory that fails the test on any request outside it.
type memDisk struct {
	t    *testing.T
	data []byte
	ro   bool
}

// at is the disk's bytes a request touches. It may run on a request's
// goroutine: it reports with Errorf (Fatalf there would leave the
// request in flight for ever).
func (m *memDisk) at(off int64, n int64, write bool) []byte {
	if off < 0 || n < 0 || off+n > int64(len(m.data)) {
		m.t.Errorf("request [%d, +%d) outside the %d-byte disk", off, n, len(m.data))
		return make([]byte, max(n, 0))
	}
	if write && m.ro {
		m.t.Errorf("write to a read-only disk")
	}
	return m.data[off : off+n]
}

func (m *memDisk) ReadV(bufs [][]byte, off int64) (int, error) {
	n := 0
	for _, b := range bufs {
		n += copy(b, m.at(off+int64(n), int64(len(b)), false))
	}
	return n, nil
}

func (m *memDisk) WriteV(bufs [][]byte, off int64, _ block.WriteFlags) (int, error) {
	n := 0
	for _, b := range bufs {
		n += copy(m.at(off+int64(n), int64(len(b)), true), b)
	}
	return n, nil
}

func (m *memDisk) Flush() error { return nil }
func (m *memDisk) Discard(off, n int64) error {
	m.at(off, n, true)
	return nil
}
func (m *memDisk) WriteZeroes(off, n int64, _ bool) error {
	clear(m.at(off, n, true))
	return nil
}
func (m *memDisk) Length() int64 { return int64(len(m.data)) }

// chainFrom builds a chain from a fuzz input: [ro/lbs][n out][n in]
// [out lengths][in lengths][out bytes...].
func chainFrom(in []byte) (virtq.Chain, bool, uint32, bool) {
	if len(in) < 3 {
		return virtq.Chain{}, false, 0, false
	}
	ro, lbs := in[0]&1 != 0, uint32(512)<<(in[0]>>1&3)
	nOut, nIn := int(in[1]%6), int(in[2]%6)
	in = in[3:]
	if len(in) < 2*(nOut+nIn) {
		return virtq.Chain{}, false, 0, false
	}
	lens := func(k int) []int {
		var l []int
		for range k {
			l = append(l, int(binary.LittleEndian.Uint16(in)%9000))
			in = in[2:]
		}
		return l
	}
	outLens, inLens := lens(nOut), lens(nIn)
	var c virtq.Chain
	for _, l := range outLens {
		b := make([]byte, l)
		in = in[copy(b, in):]
		c.Out = append(c.Out, b)
	}
	for _, l := range inLens {
		c.In = append(c.In, make([]byte, l))
	}
	return c, ro, lbs, true
}

func hdr(typ uint32, sector uint64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b, typ)
	binary.LittleEndian.PutUint64(b[8:], sector)
	return b
}

func fuzzSeed(flags byte, outs [][]byte, ins []int) []byte {
	b := []byte{flags, byte(len(outs)), byte(len(ins))}
	for _, o := range outs {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(o)))
	}
	for _, l := range ins {
		b = binary.LittleEndian.AppendUint16(b, uint16(l))
	}
	for _, o := range outs {
		b = append(b, o...)
	}
	return b
}

// FuzzRequest: any chain is either refused as malformed (needs reset,
// nothing written) or answered with one of the three status bytes, the
// disk touched only inside itself, and guest memory only inside the
// chain's writable buffers (Go's bounds: the buffers are all it has).
func FuzzRequest(f *testing.F) {
	seg := make([]byte, 16)
	binary.LittleEndian.PutUint64(seg, 8)
	binary.LittleEndian.PutUint32(seg[8:], 16)
	for _, s := range [][]byte{
		fuzzSeed(0, [][]byte{hdr(TypeIn, 8)}, []int{4096, 1}),
		fuzzSeed(0, [][]byte{hdr(TypeOut, 16)[:10], hdr(TypeOut, 16)[10:], make([]byte, 1024)}, []int{1}),
		fuzzSeed(2, [][]byte{hdr(TypeOut, 7), make([]byte, 512)}, []int{1}),
		fuzzSeed(0, [][]byte{hdr(TypeGetID, 0)}, []int{8, 30}),
		fuzzSeed(1, [][]byte{hdr(TypeDiscard, 0), seg}, []int{1}),
		fuzzSeed(0, [][]byte{hdr(TypeWriteZeroes, 0), seg[:8], seg[8:]}, []int{1}),
		fuzzSeed(0, [][]byte{hdr(TypeFlush, 0)}, []int{0}),
		fuzzSeed(0, [][]byte{hdr(TypeIn, 1<<60)}, []int{512, 1}),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, ro, lbs, ok := chainFrom(in)
		if !ok {
			return
		}
		disk := &memDisk{t: t, data: make([]byte, 64<<10), ro: ro}
		d, err := New(disk, Config{ReadOnly: ro, LogicalBlockSize: lbs, Serial: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		orig := slices.Clone(c.Out)
		outCopy := bytes.Join(orig, nil)
		r, err := parseRequest(&c)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("parse error %v is not ErrBadRequest", err)
			}
			for _, b := range c.In {
				for _, x := range b {
					if x != 0 {
						t.Fatal("a refused request wrote guest memory")
					}
				}
			}
			return
		}
		st := d.execute(&r)
		*r.status = st
		if st > StatusUnsupp {
			t.Fatalf("status %d", st)
		}
		if !bytes.Equal(bytes.Join(orig, nil), outCopy) {
			// The device never writes what the driver gave it to read.
			t.Fatal("device-readable buffers changed")
		}
	})
}
