package qcow2

// Guest writes on the exclusive path: in place where the image owns the
// cluster, else into newly allocated clusters (copy-on-write), with
// extended L2 subclusters.

import (
	"math/bits"
)

// pending is a cluster of a write that goes into a host cluster whose
// entry changes (a new one, or the zero cluster's own): the guest data p
// lands at byte in of it, and the bytes [lo, hi) of the cluster are
// written (the rest of them filled from what the guest sees there now).
// An in-place one (a cluster the image owns) is written only, at [in,
// in+len(p)), with the others: one write where they are contiguous in
// the file, as in QEMU.
type pending struct {
	c, l2Off, host int64
	in, lo, hi     int64
	p              []byte
	old            uint64 // the entry replaced: one reference dropped once it is unreferenced
	bm             uint64 // the new subcluster bitmap (extended L2)
	fresh          bool   // host was taken for this write (given back if it fails)
	inPlace        bool   // no entry changes
}

// owned reports a normal cluster the image alone references (COPIED):
// written in place.
func (img *image) owned(e uint64) bool {
	return e&flagCopied != 0 && e&flagCompressed == 0 && img.mapsHost(e) && (img.extL2 || e&flagZero == 0)
}

func (img *image) writeLocked(p []byte, off int64) (err error) {
	cs := img.clusterSize
	var allocs []pending
	var run hostRun // clusters taken for the current run of allocations
	linked := 0     // allocs[:linked] are in the L2 tables
	defer func() {
		if err != nil {
			// Nothing points to the clusters taken for the rest.
			for _, a := range allocs[linked:] {
				if a.fresh {
					img.releaseData(a.host)
				}
			}
			run.release(img)
		}
	}()
	last := (off + int64(len(p)) - 1) >> img.clusterBits
	cont := int64(-1) // where the write's host range so far ends (QEMU's cluster_offset)
	for len(p) > 0 {
		c := off >> img.clusterBits
		in := off & (cs - 1)
		n := min(int64(len(p)), cs-in)
		_, e, bm, _, err := img.writeEntry(c)
		if err != nil {
			return err
		}
		host := int64(e & offsetMask)
		switch {
		case img.owned(e) && img.extL2:
			if err := img.writeOwned(c, e, bm, in, p[:n]); err != nil {
				return err
			}
		case img.owned(e), img.zeroAllocOwned(e):
			if err := img.checkOwnedHost(c, e); err != nil {
				return err
			}
			a := pending{c: c, host: host, in: in, lo: in, hi: in + n, p: p[:n], inPlace: true}
			if e&flagZero != 0 {
				a.inPlace, a.lo, a.hi = false, 0, cs
				if a.l2Off, err = img.ensureL2(c >> img.l2Bits); err != nil {
					return err
				}
			}
			allocs = append(allocs, a)
		default:
			var a pending
			if img.external() {
				a, err = img.planAlloc(c, e, bm, in, p[:n])
			} else {
				a, err = img.planRunAlloc(c, last, cont, e, bm, in, p[:n], &run)
			}
			if err != nil {
				return err
			}
			a.fresh = true
			allocs = append(allocs, a)
			host = a.host
		}
		cont = host + cs
		p, off = p[n:], off+n
	}
	if len(allocs) == 0 {
		return nil
	}
	var buf []byte
	for i := 0; i < len(allocs); {
		a := allocs[i]
		b := a.p // the guest data covers all that is written: no copy
		if a.in != a.lo || int64(len(a.p)) != a.hi-a.lo {
			if zeroed, err := img.zeroCowSpace(a); err != nil {
				return err
			} else if zeroed {
				if err := img.writeData(a.p, a.host+a.in); err != nil {
					return err
				}
				i++
				continue
			}
			if buf == nil {
				buf = make([]byte, cs)
			}
			b = buf[:a.hi-a.lo]
			if err := img.fillAround(b, a.c*cs, a.lo, a.in, a.p); err != nil {
				return err
			}
			i++
		} else {
			// Clusters consecutive in the guest and in the file take one
			// write, as QEMU's do: a.p runs on in p's backing array into
			// the next ones' data.
			j := i + 1
			for j < len(allocs) && contiguous(allocs[j-1], allocs[j], cs) {
				j++
			}
			b = a.p[:allocs[j-1].hi-a.lo+(allocs[j-1].host-a.host)]
			i = j
		}
		if err := img.writeData(b, a.host+a.lo); err != nil {
			return err
		}
	}
	var olds []uint64
	for _, a := range allocs {
		if a.inPlace {
			linked++
			continue
		}
		if err := img.setL2Entry(a.l2Off, a.c, uint64(a.host)|flagCopied, a.bm); err != nil {
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

// planRunAlloc is planAlloc taking the host cluster from the current run
// of allocations (reuse.go), starting a new run when it is used up.
func (img *image) planRunAlloc(c, last, cont int64, e, bm uint64, in int64, p []byte, run *hostRun) (pending, error) {
	cs := img.clusterSize
	if run.left == 0 {
		// Clusters freed are free for the L2 table too (reuse.go).
		if err := img.reclaim(); err != nil {
			return pending{}, err
		}
		// The L2 table first, as QEMU's handle_alloc: a new one goes
		// before the data clusters.
		if _, err := img.ensureL2(c >> img.l2Bits); err != nil {
			return pending{}, err
		}
		r, err := img.newRun(c, last, cont)
		if err != nil {
			return pending{}, err
		}
		*run = r
	}
	a, err := img.planAllocHost(c, e, bm, in, int64(len(p)), func() (int64, error) { return run.nextHost(cs), nil })
	a.p = p
	return a, err
}

// checkOwnedHost checks the host cluster of an entry written in place.
func (img *image) checkOwnedHost(c int64, e uint64) error {
	host := int64(e & offsetMask)
	if e&l2StdReserved != 0 || host&(img.clusterSize-1) != 0 {
		return corrupt("L2 entry %#x is invalid", e)
	}
	return img.checkDataHost(extData, host, c*img.clusterSize)
}

// contiguous reports that b, the allocation after a, continues a's
// write: both take their guest data as it is, a's up to the end of its
// cluster and b's from the start of the next guest cluster, in the next
// host cluster.
func contiguous(a, b pending, cs int64) bool {
	direct := func(x pending) bool { return x.in == x.lo && int64(len(x.p)) == x.hi-x.lo }
	return direct(b) && a.hi == cs && b.lo == 0 && b.c == a.c+1 && b.host == a.host+cs
}

// writeOwned writes p at byte in of guest cluster c, a cluster the image
// owns (entry e, bitmap bm), in place. With subclusters, the partial
// subclusters at the edges that were not allocated get what showed
// through there, and the touched subclusters become allocated.
func (img *image) writeOwned(c int64, e, bm uint64, in int64, p []byte) error {
	cs := img.clusterSize
	host := int64(e & offsetMask)
	if e&l2StdReserved != 0 || host&(cs-1) != 0 {
		return corrupt("L2 entry %#x is invalid", e)
	}
	if err := img.checkDataHost(extData, host, c*cs); err != nil {
		return err
	}
	if !img.extL2 {
		return img.writeData(p, host+in)
	}
	hi := in + int64(len(p))
	mask := img.scMask(in, hi)
	if bm&mask == mask {
		return img.writeData(p, host+in) // all allocated already: no metadata
	}
	lo, end := img.scRound(in, hi)
	buf := make([]byte, end-lo)
	if err := img.fillAround(buf, c*cs, lo, in, p); err != nil {
		return err
	}
	if err := img.writeData(buf, host+lo); err != nil {
		return err
	}
	nbm := (bm | mask) &^ (mask << subclusters)
	if nbm == bm {
		return nil
	}
	l2Off, err := img.ensureL2(c >> img.l2Bits)
	if err != nil {
		return err
	}
	return img.setL2Entry(l2Off, c, e, nbm)
}

// planAlloc allocates the host cluster (and L2 table) for a write of p at
// byte in of guest cluster c, whose entry e (bitmap bm) is not owned.
// Without subclusters the whole cluster is written. With them, a
// compressed cluster becomes wholly allocated; otherwise only the
// subclusters allocated before or touched now are, so that the backing
// file still shows through the others.
func (img *image) planAlloc(c int64, e, bm uint64, in int64, p []byte) (pending, error) {
	a, err := img.planAllocN(c, e, bm, in, int64(len(p)))
	a.p = p
	return a, err
}

// planAllocN is planAlloc for n bytes at in whose data comes later
// (alloc_range.go): a.p is left nil.
func (img *image) planAllocN(c int64, e, bm uint64, in, n int64) (pending, error) {
	return img.planAllocHost(c, e, bm, in, n, func() (int64, error) { return img.allocData(c) })
}

// planAllocHost is planAllocN with the host cluster from alloc.
func (img *image) planAllocHost(c int64, e, bm uint64, in, n int64, alloc func() (int64, error)) (pending, error) {
	cs := img.clusterSize
	a := pending{c: c, in: in, lo: 0, hi: cs, old: e}
	if img.extL2 && e&flagCompressed == 0 {
		if !img.mapsHost(e) && bm&allocBitmapMask != 0 || bm&(bm>>subclusters)&allocBitmapMask != 0 {
			return pending{}, corrupt("L2 entry %#x has an invalid subcluster bitmap %#x", e, bm)
		}
		alloc := bm&allocBitmapMask | img.scMask(in, in+n)
		zero := (bm >> subclusters) &^ alloc
		a.bm = alloc | zero<<subclusters
		a.lo = int64(bits.TrailingZeros64(alloc)) << img.scBits
		a.hi = int64(64-bits.LeadingZeros64(alloc)) << img.scBits
	} else if img.extL2 {
		a.bm = allocBitmapMask
	}
	if !img.mapsHost(e) && e&flagCompressed == 0 {
		a.old = 0
	}
	var err error
	if a.l2Off, err = img.ensureL2(c >> img.l2Bits); err != nil {
		return pending{}, err
	}
	if a.host, err = alloc(); err != nil {
		return pending{}, err
	}
	return a, nil
}

// fillAround fills b, the bytes of guest cluster start from byte lo of
// it, with p at byte in and elsewhere what the guest sees there now
// (zeroes past the end of the image).
func (img *image) fillAround(b []byte, start, lo, in int64, p []byte) error {
	pe := in + int64(len(p))
	if err := img.readView(b[:in-lo], start+lo); err != nil {
		return err
	}
	if err := img.readView(b[pe-lo:], start+pe); err != nil {
		return err
	}
	copy(b[in-lo:], p)
	return nil
}

// readView reads what the guest sees at off (zeroes past the end); in
// the VM state area (vmstate.go), what is there.
func (img *image) readView(b []byte, off int64) error {
	clear(b)
	end := img.length
	if off >= img.vmStateOffset() {
		end = off + int64(len(b))
	}
	if n := min(int64(len(b)), end-off); n > 0 {
		if _, err := img.readAt(b[:n], off); err != nil {
			return err
		}
	}
	return nil
}
