package faultdisk

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"
)

func fill(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }

// TestCrashStates: what a flush completed is durable; what came after is
// pending, and a crash keeps any pieces of it, in any order.
func TestCrashStates(t *testing.T) {
	d := New(2048)
	n := openDisk(t, d)
	write := func(b byte, off, l int) {
		t.Helper()
		if _, err := n.WriteAt(fill(b, l), int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	write(1, 0, 1024)
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	write(2, 512, 1024) // B: sectors 1, 2
	write(3, 1024, 512) // C: sector 2
	if err := n.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	write(4, 3584, 512) // D: sector 7, past the old end

	pending := d.Pending()
	if len(pending) != 4 || pending[2].Kind != Truncate {
		t.Fatalf("pending: %+v", pending)
	}
	sectors := func(img []byte) []byte {
		var out []byte
		for off := 0; off < len(img); off += 512 {
			out = append(out, img[off])
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		pieces []Piece
		want   []byte
	}{
		{"nothing", nil, []byte{1, 1, 0, 0}},
		{"prefix 1", Prefix(pending, 1), []byte{1, 2, 2, 0}},
		{"prefix 2", Prefix(pending, 2), []byte{1, 2, 3, 0}},
		{"reordered", []Piece{Whole(pending, 1), Whole(pending, 0)}, []byte{1, 2, 2, 0}},
		{"torn", []Piece{{I: 0, Off: 1024, End: 1536}}, []byte{1, 1, 2, 0}},
		{"truncate alone", Prefix(pending, 3)[2:], []byte{1, 1, 0, 0, 0, 0, 0, 0}},
		{"write past the end, truncate lost", []Piece{Whole(pending, 3)}, []byte{1, 1, 0, 0, 0, 0, 0, 4}},
		{"all", Prefix(pending, 4), []byte{1, 2, 3, 0, 0, 0, 0, 4}},
	} {
		if got := sectors(d.Crash(tc.pieces)); !bytes.Equal(got, tc.want) {
			t.Errorf("%s: sectors %v, want %v", tc.name, got, tc.want)
		}
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := sectors(d.Crash(nil)); !bytes.Equal(got, []byte{1, 2, 3, 0, 0, 0, 0, 4}) {
		t.Errorf("after the flush: %v", got)
	}
}

// TestDroppedFlush: a flush a rule drops makes nothing durable, so a
// crash after it may lose what it should have kept.
func TestDroppedFlush(t *testing.T) {
	d := New(512)
	d.AddRule(&Rule{Kinds: Flush, Drop: true, Times: 1})
	n := openDisk(t, d)
	if _, err := n.WriteAt(fill(7, 512), 0); err != nil {
		t.Fatal(err)
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(d.Pending()) != 1 || !allZero(d.Durable()) {
		t.Error("a dropped flush made the write durable")
	}
}

// TestPowerLoss: after a power loss the node reads the crash state.
func TestPowerLoss(t *testing.T) {
	d := New(1024)
	n := openDisk(t, d)
	n.WriteAt(fill(1, 512), 0)
	n.Flush()
	n.WriteAt(fill(2, 512), 512)
	n.WriteAt(fill(3, 512), 0)
	d.PowerLoss(Prefix(d.Pending(), 1))
	got := make([]byte, 1024)
	if _, err := n.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(fill(1, 512), fill(2, 512)...)) || len(d.Pending()) != 0 {
		t.Error("the node does not read the crash state")
	}
	if d.Used() != 4096 {
		t.Errorf("used %d", d.Used())
	}
}

// TestJournal: the crash points of a recorded run are its flushes and its
// end, each with what that flush would make durable.
func TestJournal(t *testing.T) {
	d := Load(fill(9, 512))
	n := openDisk(t, d)
	n.WriteAt(fill(1, 512), 0) // pending before recording
	d.Record()
	n.WriteAt(fill(2, 512), 0)
	n.Flush()
	n.Flush() // nothing to flush: the node skips it
	n.WriteAt(fill(3, 512), 0)
	n.WriteAt(fill(4, 512), 0)
	n.Flush()
	n.WriteAt(fill(5, 512), 0)

	type point struct {
		durable byte
		pending []byte
	}
	var got []point
	d.Journal().CrashPoints(func(cp *CrashPoint) bool {
		p := point{durable: cp.Durable[0]}
		for _, c := range cp.Pending {
			p.pending = append(p.pending, c.Data[0])
		}
		got = append(got, p)
		return true
	})
	want := []point{{9, []byte{1, 2}}, {2, []byte{3, 4}}, {4, []byte{5}}}
	if !slices.EqualFunc(got, want, func(a, b point) bool { return a.durable == b.durable && bytes.Equal(a.pending, b.pending) }) {
		t.Errorf("crash points %v, want %v", got, want)
	}
}

// TestRandom: random crash states keep whole truncates in place, tear
// only at sectors, and over many draws reach every order of two writes.
func TestRandom(t *testing.T) {
	pending := []Change{
		{Seq: 0, Kind: Write, Off: 100, Len: 2000, Data: fill(1, 2000)},
		{Seq: 1, Kind: Write, Off: 0, Len: 512, Data: fill(2, 512)},
		{Seq: 2, Kind: Truncate, Off: 8192},
		{Seq: 3, Kind: Write, Off: 4096, Len: 512, Data: fill(3, 512)},
	}
	r := rand.New(rand.NewPCG(1, 2))
	orders := map[[2]int]bool{}
	torn := false
	for range 500 {
		pieces := Random(r, pending, 0.5, 0.5)
		seenTrunc := false
		var first []int
		for _, p := range pieces {
			c := pending[p.I]
			if c.Kind == Truncate {
				seenTrunc = true
				if p.Off != c.Off || p.End != c.end() {
					t.Fatal("a torn truncate")
				}
				continue
			}
			if seenTrunc && p.I < 2 || !seenTrunc && p.I == 3 && slices.ContainsFunc(pieces, func(q Piece) bool { return q.I == 2 }) {
				t.Fatal("a write moved across a truncate")
			}
			if p.Off < c.Off || p.End > c.end() || p.Off != c.Off && p.Off%SectorSize != 0 || p.End != c.end() && p.End%SectorSize != 0 {
				t.Fatalf("piece %+v of %+v not cut at sectors", p, c)
			}
			if p.Off != c.Off || p.End != c.end() {
				torn = true
			}
			if p.I < 2 && !slices.Contains(first, p.I) {
				first = append(first, p.I)
			}
		}
		if len(first) == 2 {
			orders[[2]int{first[0], first[1]}] = true
		}
	}
	if len(orders) != 2 || !torn {
		t.Errorf("orders seen %v, torn %v", orders, torn)
	}
}
