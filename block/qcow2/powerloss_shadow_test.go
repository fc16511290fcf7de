package qcow2

// The power-loss harness's shadow model: what each sector of the guest's
// disk may read after a power loss at a given moment of a run.

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// allowedSet is what each sector may read after a power loss at one
// moment: the value it had when the last completed flush completed, or
// any value written since. A sector that several writes since touched
// in part may also mix them: each byte must then be one of its allowed
// values, since each write reaches the disk or not on its own.
type allowedSet struct {
	pr    *plRun
	last  int             // the last completed flush (index in pr.ops), -1: none
	base  []uint64        // per sector: the value at the last completed flush
	sizes []int64         // the disk's sizes: at the last completed flush, and since
	extra map[int64][]int // sectors written since: the operations (indexes in pr.ops)
	after string          // the last completed flush, for messages
}

func (a *allowedSet) ok(s int64, h uint64, got []byte) bool {
	if a.base[s] == h {
		return true
	}
	ops := a.extra[s]
	for _, i := range ops {
		if a.pr.ops[i].hash(s) == h {
			return true
		}
	}
	if len(ops) < 2 {
		return false
	}
	base := a.pr.sectorAfter(s, a.last)
	for b := range got {
		ok := got[b] == base[b]
		for _, i := range ops {
			ok = ok || got[b] == a.pr.ops[i].sector(s)[b]
		}
		if !ok {
			return false
		}
	}
	return true
}

func (op *guestOp) hash(s int64) uint64 { return op.hashes[s-op.firstSect] }

func (op *guestOp) sector(s int64) []byte {
	i := (s - op.firstSect) * sector
	return op.data[i : i+sector]
}

func (op *guestOp) covers(s int64) bool {
	return !op.flush && s >= op.firstSect && s < op.firstSect+int64(len(op.hashes))
}

// sectorAfter is what sector s read after guest operation last (-1:
// before the run).
func (pr *plRun) sectorAfter(s int64, last int) []byte {
	for i := last; i >= 0; i-- {
		if pr.ops[i].covers(s) {
			return pr.ops[i].sector(s)
		}
	}
	return pr.initialData[s*sector : (s+1)*sector]
}

// at is the allowed set for a power loss at crash point j: when the disk
// had taken its operations numbered below j. A guest operation counts as
// completed if all its disk operations are below j, and as possibly seen
// if it started by j.
func (pr *plRun) at(j int64) *allowedSet {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	last, started := -1, -1
	for i, op := range pr.ops {
		if op.flush && op.end <= j {
			last = i
		}
		if op.start <= j {
			started = i
		}
	}
	if a := pr.shadow[[2]int{last, started}]; a != nil {
		return a
	}
	base := pr.bases[last]
	if base == nil {
		base = append([]uint64(nil), pr.initial...)
		for _, op := range pr.ops[:last+1] {
			copy(base[op.firstSect:], op.hashes)
		}
		pr.bases[last] = base
	}
	a := &allowedSet{pr: pr, last: last, base: base, extra: map[int64][]int{}, after: "none (the image as it was)",
		sizes: []int64{pr.kind.size}}
	if last >= 0 {
		a.after = fmt.Sprintf("op %d (%s)", last+1, pr.ops[last].name)
		a.sizes[0] = pr.ops[last].size
	}
	for i := last + 1; i <= started; i++ {
		op := &pr.ops[i]
		a.sizes = append(a.sizes, op.size)
		for k := range op.hashes {
			s := op.firstSect + int64(k)
			a.extra[s] = append(a.extra[s], i)
		}
	}
	pr.shadow[[2]int{last, started}] = a
	return a
}

// checkData finds a sector of got (the virtual disk of st) that the
// shadow model allows at neither of st's crash points.
func (pr *plRun) checkData(got []byte, st plState) error {
	hashes := pr.hashSectors(got)
	for _, j := range []int64{st.j1, st.j2} {
		a := pr.at(j)
		if !slices.Contains(a.sizes, int64(len(got))) {
			return fmt.Errorf("the disk is %d bytes, not one of %v (crash at disk op %d)", len(got), a.sizes, j)
		}
		for s, h := range hashes {
			if !a.ok(int64(s), h, got[s*sector:(s+1)*sector]) {
				return fmt.Errorf("sector %d (offset %d) reads %s: neither what the last completed flush, %s, left nor anything written since (crash at disk op %d)",
					s, int64(s)*sector, pr.describeSector(got[s*sector:(s+1)*sector]), a.after, j)
			}
		}
	}
	return nil
}

// describeSector says which guest operation wrote a sector, if one did.
func (pr *plRun) describeSector(b []byte) string {
	op := binary.LittleEndian.Uint64(b)
	if op >= 1 && op <= uint64(len(pr.ops)) && b[16] == byte(int(op)*7)+byte(binary.LittleEndian.Uint64(b[8:])) {
		return fmt.Sprintf("the data of op %d (%s)", op, pr.ops[op-1].name)
	}
	if allZero(b) {
		return "zeroes"
	}
	return fmt.Sprintf("%x...", b[:16])
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
