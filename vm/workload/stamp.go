package workload

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Every 512-byte sector a workload writes carries a stamp: a magic, the
// byte offset it was written for, the generation of the write, a
// CRC-32C of the whole sector, and a pattern derived from offset and
// generation. A sector read back shows whether it is the write expected
// there (generation), whether it belongs somewhere else (offset), and
// whether it is whole (checksum).
const (
	stampSize  = 512
	stampMagic = "MVMMBLK1"
	crcOff     = 24
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// stamp fills b (a multiple of stampSize) as written at off with
// generation gen.
func stamp(b []byte, off int64, gen uint32) {
	for s := 0; s < len(b); s += stampSize {
		sec := b[s : s+stampSize]
		o := uint64(off) + uint64(s)
		copy(sec, stampMagic)
		binary.LittleEndian.PutUint64(sec[8:], o)
		binary.LittleEndian.PutUint64(sec[16:], uint64(gen))
		x := o*0x9e3779b97f4a7c15 ^ uint64(gen)*0xbf58476d1ce4e5b9 | 1
		for i := 28; i < stampSize; i += 4 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint32(sec[i:], uint32(x))
		}
		binary.LittleEndian.PutUint32(sec[crcOff:], 0)
		binary.LittleEndian.PutUint32(sec[crcOff:], crc32.Checksum(sec, castagnoli))
	}
}

// found is what a sector read back holds.
type found struct {
	stamped bool // has the magic
	intact  bool // and its checksum holds
	off     int64
	gen     uint32
}

func readStamp(sec []byte) found {
	if string(sec[:8]) != stampMagic {
		return found{}
	}
	f := found{stamped: true, off: int64(binary.LittleEndian.Uint64(sec[8:])), gen: uint32(binary.LittleEndian.Uint64(sec[16:]))}
	want := binary.LittleEndian.Uint32(sec[crcOff:])
	var c [4]byte
	h := crc32.Update(0, castagnoli, sec[:crcOff])
	h = crc32.Update(h, castagnoli, c[:])
	h = crc32.Update(h, castagnoli, sec[crcOff+4:])
	f.intact = h == want
	return f
}

// Mismatch is a sector that did not hold what it should have.
type Mismatch struct {
	Device string `json:"device"`
	Offset int64  `json:"offset"`
	// Kind: "lost" (an older or newer generation than any write that
	// could be there: a lost or stale write), "misplaced" (a sector
	// stamped for another offset), "corrupt" (checksum wrong: a flipped
	// or torn sector), "unstamped" (no stamp where a write landed).
	Kind     string   `json:"kind"`
	Expected []uint32 `json:"expected"`
	FoundGen uint32   `json:"found-generation"`
	FoundOff int64    `json:"found-offset"`
}

func (m Mismatch) String() string {
	exp := fmt.Sprint(m.Expected[0])
	for _, g := range m.Expected[1:] {
		exp += fmt.Sprintf(" or %d", g)
	}
	switch m.Kind {
	case "misplaced":
		return fmt.Sprintf("%s: offset %d (%#x): expected generation %s, found a sector written for offset %d (%#x), generation %d",
			m.Device, m.Offset, m.Offset, exp, m.FoundOff, m.FoundOff, m.FoundGen)
	case "corrupt":
		return fmt.Sprintf("%s: offset %d (%#x): expected generation %s, found a sector whose checksum is wrong (generation %d)",
			m.Device, m.Offset, m.Offset, exp, m.FoundGen)
	case "unstamped":
		return fmt.Sprintf("%s: offset %d (%#x): expected generation %s, found no stamp", m.Device, m.Offset, m.Offset, exp)
	}
	return fmt.Sprintf("%s: offset %d (%#x): expected generation %s, found generation %d", m.Device, m.Offset, m.Offset, exp, m.FoundGen)
}

// check compares the sector sec, read at off, with the generations that
// may be there: committed, the last write to complete (0: unknown, never
// written by a workload), and pending, a write in flight when the read
// started (0: none). ok is false with a mismatch; verified says whether
// there was anything to compare with.
func check(sec []byte, off int64, committed, pending uint32) (m Mismatch, ok, verified bool) {
	f := readStamp(sec)
	m = Mismatch{Offset: off, FoundGen: f.gen, FoundOff: f.off}
	if pending != 0 {
		m.Expected = append(m.Expected, pending)
	}
	if committed == 0 {
		// The old contents are unknown: only a stamp can be checked
		// against itself, and where nothing is expected either, the
		// generation it holds is as good as any.
		switch {
		case !f.stamped:
			return Mismatch{}, true, false
		case !f.intact:
			m.Kind = "corrupt"
		case f.off != off:
			m.Kind = "misplaced"
		default:
			return Mismatch{}, true, true
		}
		if len(m.Expected) == 0 {
			m.Expected = []uint32{f.gen}
		}
		return m, false, true
	}
	m.Expected = append([]uint32{committed}, m.Expected...)
	switch {
	case !f.stamped:
		m.Kind = "unstamped"
	case !f.intact:
		m.Kind = "corrupt"
	case f.off != off:
		m.Kind = "misplaced"
	case f.gen != committed && f.gen != pending:
		m.Kind = "lost"
	default:
		return Mismatch{}, true, true
	}
	return m, false, true
}
