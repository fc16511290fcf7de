package qcow2

// Allocating host clusters for a guest range whose data does not come
// through WriteAt: copy offloading (CopyRangeTo: qemu-img convert -C into
// qcow2, the data file's bytes filled by copy_file_range, as QEMU's
// qcow2_co_copy_range_to) and preallocation (Preallocate: resize and
// truncate with preallocation=metadata|falloc|full, as QEMU's
// preallocate_co and qcow2_co_truncate). Clusters are allocated and linked by the write path's
// own steps (cow.go) in its order: refcounts taken in memory (rc.alloc,
// ensureL2), the data and what the guest sees around it in a partly
// covered cluster written, and only then the L2 entries set in memory,
// which writeBack writes after the refcounts and the data are durable.

import (
	"fmt"

	"minivmm/block"
)

// hostSpan is a run of a request laid out linearly in the data file: the
// request's bytes [pos, pos+n) at host offset host.
type hostSpan struct{ pos, host, n int64 }

// dataFile is the node the data clusters live in: the one place that
// says so for this file's requests (the image's own file: no external
// data file yet).
func (img *image) dataFile() *block.Node { return img.data }

// rangeAlloc is one cluster of a range that gets a new host cluster.
type rangeAlloc struct {
	pending
	entry    uint64 // the L2 entry to set (host | COPIED, maybe ZERO)
	dlo, dhi int64  // bytes of the cluster the range covers; (copy) the caller's data fills them, the rest of [lo, hi) gets the guest's view
	fill     metaFill
	inPlace  bool // a cluster the image owns already: only its bitmap changes
}

// allocMode is what allocRange allocates for.
type allocMode uint8

const (
	allocCopy    allocMode = iota // the caller's fill writes every byte of the range
	allocMeta                     // preallocation=metadata
	allocReserve                  // falloc, full: the fill then zeroes the new clusters' host range
)

// metaFill is what metadata preallocation writes into a new cluster.
type metaFill uint8

const (
	fillView   metaFill = iota // [lo, hi) gets what the guest sees there (copy: but [dlo, dhi))
	fillNone                   // nothing: the entry says what it reads (zero, subclusters)
	fillZeroes                 // a data cluster reading as zeroes: see allocRange
)

// CopyRangeTo fills the guest range [off, off+n) by copy, in place in
// the data file: clusters the image owns take the bytes where they are,
// the others get new clusters (QEMU's qcow2_co_copy_range_to).
func (img *image) CopyRangeTo(off, n int64, copy block.HostCopyFunc) error {
	if _, ok := img.dataFile().Image().(block.RangeCopyTarget); !ok {
		return block.ErrNotSupported
	}
	return img.fillRange(off, n, func(s hostSpan) error {
		return img.dataFile().CopyRangeTo(s.host, s.n, func(fd int, o, pos, l int64) error {
			return copy(fd, o, s.pos+pos, l)
		})
	})
}

// fillRange is CopyRangeTo with the data put into each span of the data
// file by put, however it gets there.
func (img *image) fillRange(off, n int64, put func(hostSpan) error) error {
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	return img.allocRange(off, n, allocCopy, func(spans []hostSpan) error {
		img.file.Event("write_aio")
		for _, s := range spans {
			if err := img.guardData(s.host, s.n); err != nil {
				return err
			}
			if err := put(s); err != nil {
				return err
			}
		}
		return nil
	})
}

// Preallocate gives [off, off+n) host clusters without writing guest
// data (preallocation=metadata, falloc, full): the range reads as
// before. As QEMU, an unallocated cluster that reads as zeroes gets a
// data cluster that reads as zeroes on the host (a hole where the file
// grew, zeroed where a freed cluster is reused, which QEMU does not do),
// a zero cluster stays one with a host cluster (zero-alloc), and with
// extended L2 the subclusters keep their state; anything else (backing
// data, compressed, shared with a snapshot) is copied into the new
// cluster. falloc and full then reserve or write the host range.
func (img *image) Preallocate(off, n int64, mode block.Prealloc) error {
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	mo := allocMeta
	if mode != block.PreallocMetadata {
		mo = allocReserve
	}
	return img.allocRange(off, n, mo, func(spans []hostSpan) error {
		if mode == block.PreallocMetadata {
			return nil
		}
		var zero []byte
		for _, s := range spans {
			if err := img.guardData(s.host, s.n); err != nil {
				return err
			}
			if mode == block.PreallocFalloc {
				if err := img.dataFile().WriteZeroes(s.host, s.n, false); err != nil {
					return err
				}
				continue
			}
			if zero == nil {
				zero = make([]byte, min(s.n, 1<<20))
			}
			for o := int64(0); o < s.n; o += int64(len(zero)) {
				if _, err := img.dataFile().WriteAt(zero[:min(int64(len(zero)), s.n-o)], s.host+o); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// guardData is checkedWrite's check for guest bytes about to be put into
// the data file: the overlap check, the file grown. With dataFile, the
// one place of this file that knows where data clusters live.
func (img *image) guardData(off, n int64) error {
	if img.corrupted {
		return errVersionCorrupt
	}
	if img.beforeWrite != nil {
		img.beforeWrite()
	}
	if img.external() {
		// A data file has no metadata to overlap (QEMU skips the check
		// for it); it grows as the guest's offsets need.
		if end := off + n; end > img.data.Length() {
			return img.data.Truncate(end)
		}
		return nil
	}
	if what := img.overlap(off, n, 0); what != "" {
		msg := fmt.Sprintf("Preventing invalid write on metadata (overlaps with %s)", what)
		img.markCorrupt(msg, off, n)
		return corrupt("%s; image marked as corrupt", msg)
	}
	return img.ensureFile(off + n)
}

// allocRange readies host clusters for [off, off+n), img.wmu held. With
// allocCopy the caller's fill writes every byte of the range (the spans
// given, in request order); otherwise nothing of the guest's is written
// but what must be copied to keep what the range reads, and fill is
// given the spans of new clusters whose host bytes are not read (or,
// allocReserve, read as zeroes once fill has zeroed them).
func (img *image) allocRange(off, n int64, mode allocMode, fill func([]hostSpan) error) (err error) {
	meta := mode != allocCopy
	cs := img.clusterSize
	zeroFrom := img.dataFile().Length() // what the file grows by reads as zeroes
	var allocs []rangeAlloc
	linked := 0
	defer func() {
		if err != nil {
			// Nothing points to the clusters taken for the rest.
			for _, a := range allocs[linked:] {
				if !a.inPlace {
					img.releaseData(a.host)
				}
			}
		}
	}()
	var spans []hostSpan
	addSpan := func(s hostSpan) {
		if k := len(spans) - 1; k >= 0 && spans[k].pos+spans[k].n == s.pos && spans[k].host+spans[k].n == s.host {
			spans[k].n += s.n
			return
		}
		spans = append(spans, s)
	}
	for pos := int64(0); pos < n; {
		c, in := (off+pos)>>img.clusterBits, (off+pos)&(cs-1)
		k := min(n-pos, cs-in)
		_, e, bm, _, err := img.writeEntry(c)
		if err != nil {
			return err
		}
		if img.owned(e) {
			host := int64(e & offsetMask)
			if e&l2StdReserved != 0 || host&(cs-1) != 0 {
				return corrupt("L2 entry %#x is invalid", e)
			}
			if m := img.scMask(in, in+k); !meta && img.extL2 && bm&m != m {
				// Subclusters to allocate in a cluster the image owns:
				// their edges get what the guest sees there, and the
				// bitmap changes once the data is in (writeOwned's way).
				a := rangeAlloc{pending: pending{c: c, host: host, in: in}, entry: e, dlo: in, dhi: in + k, inPlace: true}
				a.lo, a.hi = img.scRound(in, in+k)
				a.bm = (bm | m) &^ (m << subclusters)
				if a.l2Off, err = img.ensureL2(c >> img.l2Bits); err != nil {
					return err
				}
				allocs = append(allocs, a)
			}
			if !meta {
				addSpan(hostSpan{pos, host + in, k})
			}
			pos += k
			continue
		}
		var a rangeAlloc
		if meta {
			a, err = img.planMeta(c, e, bm, in, k, mode == allocReserve)
			if a.fill != fillView {
				a.dlo, a.dhi = in, in+k
				addSpan(hostSpan{pos, a.host + in, k})
			}
		} else {
			a.pending, err = img.planAllocN(c, e, bm, in, k)
			a.dlo, a.dhi = in, in+k
		}
		if err != nil {
			return err
		}
		if a.entry == 0 {
			a.entry = uint64(a.host) | flagCopied
		}
		allocs = append(allocs, a)
		if !meta {
			addSpan(hostSpan{pos, a.host + in, k})
		}
		pos += k
	}
	// What the guest sees around the caller's data (all of it, for a
	// cluster metadata preallocation copies), and the zeroes of reused
	// clusters, before anything points there.
	var buf []byte
	for _, a := range allocs {
		switch a.fill {
		case fillNone:
			continue
		case fillZeroes:
			if err := img.zeroCluster(a, zeroFrom); err != nil {
				return err
			}
			continue
		}
		for _, r := range [][2]int64{{a.lo, a.dlo}, {a.dhi, a.hi}} {
			if r[1] <= r[0] {
				continue
			}
			if buf == nil {
				buf = make([]byte, cs)
			}
			b := buf[:r[1]-r[0]]
			if err := img.readView(b, a.c*cs+r[0]); err != nil {
				return err
			}
			img.file.Event("write_aio")
			if err := img.writeData(b, a.host+r[0]); err != nil {
				return err
			}
		}
	}
	if len(spans) > 0 {
		if err := fill(spans); err != nil {
			return err
		}
	}
	var olds []uint64
	for _, a := range allocs {
		if err := img.setL2Entry(a.l2Off, a.c, a.entry, a.bm); err != nil {
			img.freeAll(olds)
			return err
		}
		linked++
		if a.old != 0 {
			olds = append(olds, a.old)
		}
	}
	return img.freeAll(olds)
}

// planMeta allocates the host cluster of guest cluster c (entry e,
// bitmap bm, not owned) for preallocation: see Preallocate.
// With reserve (falloc, full: the host range is then zeroed), what reads
// as zeroes in [in, in+k) becomes data, as QEMU makes it: a zero cluster
// a data cluster, zero subclusters allocated ones.
func (img *image) planMeta(c int64, e, bm uint64, in, k int64, reserve bool) (rangeAlloc, error) {
	cs := img.clusterSize
	special := false
	var a rangeAlloc
	switch {
	case e&(flagCompressed|offsetMask) != 0:
		// Data elsewhere (compressed, shared, zero-alloc shared): copied.
	case img.extL2:
		// No host cluster: no subcluster is allocated, and each keeps
		// reading as it does (zeroes, or the backing file).
		special, a.fill = true, fillNone
		a.bm = bm
		if reserve {
			whole, _, _ := img.scWhole(c*cs, in, in+k)
			z := bm >> subclusters & whole
			a.bm = (bm | z) &^ (z << subclusters)
		}
	case e&flagZero != 0 && reserve:
		special, a.fill = true, fillZeroes
	case e&flagZero != 0:
		special, a.fill = true, fillNone
		a.entry = flagZero
	default:
		// Unallocated: a data cluster over zeroes, where the guest sees
		// zeroes there now.
		view := make([]byte, cs)
		if err := img.readView(view, c*cs); err != nil {
			return rangeAlloc{}, err
		}
		special = allZeroBytes(view)
		a.fill = fillZeroes
	}
	if !special {
		p, err := img.planAllocN(c, e, bm, 0, cs)
		if err != nil {
			return rangeAlloc{}, err
		}
		// All of [lo, hi) gets the guest's view: no data of the caller.
		return rangeAlloc{pending: p, dlo: p.lo, dhi: p.lo}, nil
	}
	var err error
	a.c = c
	if a.l2Off, err = img.ensureL2(c >> img.l2Bits); err != nil {
		return rangeAlloc{}, err
	}
	if a.host, err = img.allocData(c); err != nil {
		return rangeAlloc{}, err
	}
	a.entry |= uint64(a.host) | flagCopied
	return a, nil
}

func allZeroBytes(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// zeroCluster makes the new host cluster of a (fillZeroes) read as
// zeroes: the part the range covers is left to the file, where it grew
// (a hole) past zeroFrom, and punched out where a freed cluster is reused
// (QEMU leaves that cluster's old bytes); the rest of the cluster gets
// zeroes written (allocated), as QEMU's copy-on-write of zeroes around a
// preallocated range does.
func (img *image) zeroCluster(a rangeAlloc, zeroFrom int64) error {
	cs := img.clusterSize
	if err := img.guardData(a.host, cs); err != nil {
		return err
	}
	data := img.dataFile()
	if a.host+a.dlo < zeroFrom {
		if err := data.WriteZeroes(a.host+a.dlo, min(a.dhi, zeroFrom-a.host)-a.dlo, true); err != nil {
			return err
		}
	}
	for _, r := range [][2]int64{{0, a.dlo}, {a.dhi, cs}} {
		if r[1] > r[0] {
			if err := data.WriteZeroes(a.host+r[0], r[1]-r[0], false); err != nil {
				return err
			}
		}
	}
	return nil
}
