package quorum

import (
	"bytes"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

var errLengths = fmt.Errorf("quorum: children differ in length: %w", unix.EIO)

// each runs f on every child at once and returns their errors.
func each(kids []*block.Node, f func(i int, c *block.Node) error) []error {
	errs := make([]error, len(kids))
	var wg sync.WaitGroup
	for i, c := range kids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f(i, c)
		}()
	}
	wg.Wait()
	return errs
}

// ReadAt reads through the read pattern.
func (q *image) ReadAt(p []byte, off int64) (int, error) {
	kids := q.children()
	if q.cfg.fifo {
		return q.readFIFO(kids, p, off)
	}
	return q.readQuorum(kids, p, off)
}

// readFIFO reads the children in order until one succeeds (QEMU's
// read_fifo_child); each failure is reported.
func (q *image) readFIFO(kids []*block.Node, p []byte, off int64) (int, error) {
	var err error
	for _, c := range kids {
		if _, err = c.ReadAt(p, off); err == nil {
			return len(p), nil
		}
		q.reportBad(opRead, off, int64(len(p)), c.Name(), err)
	}
	return 0, err
}

// readQuorum reads every child and votes (QEMU's read_quorum_children
// and quorum_vote).
func (q *image) readQuorum(kids []*block.Node, p []byte, off int64) (int, error) {
	n := int64(len(p))
	bufs := make([][]byte, len(kids))
	errs := each(kids, func(i int, c *block.Node) error {
		bufs[i] = make([]byte, len(p))
		_, err := c.ReadAt(bufs[i], off)
		return err
	})
	ok := make([]bool, len(kids))
	success := 0
	for i, err := range errs {
		if err != nil {
			q.reportBad(opRead, off, n, kids[i].Name(), err)
			continue
		}
		ok[i] = true
		success++
	}
	if success < q.cfg.threshold {
		q.reportFailure(off, n)
		return 0, voteError(errs)
	}
	first := 0
	for !ok[first] {
		first++
	}
	agree := true
	for j := first + 1; j < len(kids) && agree; j++ {
		if !ok[j] {
			continue
		}
		if q.cfg.blkverify {
			if at := mismatch(bufs[first], bufs[j]); at >= 0 {
				// QEMU prints this and exits; minivmm fails the
				// request instead.
				return 0, fmt.Errorf("quorum: offset=%d bytes=%d contents mismatch at offset %d: %w",
					off, n, off+int64(at), unix.EIO)
			}
			continue
		}
		agree = bytes.Equal(bufs[first], bufs[j])
	}
	if agree {
		copy(p, bufs[first])
		return len(p), nil
	}
	versions := voteData(bufs, ok)
	w := winner(versions)
	if len(versions[w].items) < q.cfg.threshold {
		q.reportFailure(off, n)
		return 0, fmt.Errorf("quorum: no %d children agree at offset %d (%d bytes): %w", q.cfg.threshold, off, n, unix.EIO)
	}
	copy(p, bufs[versions[w].first])
	// The losers, reported in QEMU's order (newest version first, and
	// in each the last child first), and rewritten if asked.
	var bad []*block.Node
	for v := len(versions) - 1; v >= 0; v-- {
		if v == w {
			continue
		}
		items := versions[v].items
		for k := len(items) - 1; k >= 0; k-- {
			q.reportBad(opRead, off, n, kids[items[k]].Name(), nil)
			bad = append(bad, kids[items[k]])
		}
	}
	if q.cfg.rewrite {
		// A correction attempt: its errors change nothing of the read.
		each(bad, func(_ int, c *block.Node) error {
			_, err := c.WriteAt(p, off)
			return err
		})
	}
	return len(p), nil
}

// mismatch is the first offset where a and b differ, or -1.
func mismatch(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// write runs one write on every child: it succeeds when vote-threshold
// of them do; failing children are reported, and a write without a
// quorum fails with the error most children failed with.
func (q *image) write(off, n int64, f func(c *block.Node) error) error {
	kids := q.children()
	errs := each(kids, func(_ int, c *block.Node) error { return f(c) })
	success := 0
	for i, err := range errs {
		if err != nil {
			q.reportBad(opWrite, off, n, kids[i].Name(), err)
			continue
		}
		success++
	}
	if success < q.cfg.threshold {
		q.reportFailure(off, n)
		return voteError(errs)
	}
	return nil
}

func (q *image) WriteAt(p []byte, off int64) (int, error) {
	err := q.write(off, int64(len(p)), func(c *block.Node) error {
		_, err := c.WriteAt(p, off)
		return err
	})
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteZeroes passes write-zeroes to every child (QEMU's
// quorum_co_pwrite_zeroes).
func (q *image) WriteZeroes(off, n int64, unmap bool) error {
	return q.write(off, n, func(c *block.Node) error { return c.WriteZeroes(off, n, unmap) })
}

// Flush flushes every child; it fails when fewer than vote-threshold
// succeed (QEMU's quorum_co_flush).
func (q *image) Flush() error {
	kids := q.children()
	errs := make([]error, len(kids))
	success := 0
	for i, c := range kids {
		if errs[i] = c.Flush(); errs[i] != nil {
			q.reportBad(opFlush, 0, 0, c.Name(), errs[i])
			continue
		}
		success++
	}
	if success >= q.cfg.threshold {
		return nil
	}
	return voteError(errs)
}

// BlockStatus is QEMU's quorum_co_block_status: zeroes where every
// child's chain reads as zeroes (as far as the shortest such extent),
// data elsewhere (as far as the longest data extent).
func (q *image) BlockStatus(off, n int64) (block.Status, int64, error) {
	pZero, pData := n, int64(0)
	for _, c := range q.children() {
		st, l, err := block.StatusAbove(c, nil, off, n)
		if err != nil {
			q.reportBad(opRead, off, n, c.Name(), err)
			pData = n
			break
		}
		if st.Zero {
			pZero = min(pZero, l)
		} else {
			pData = max(pData, l)
		}
	}
	if pData > 0 {
		return block.Status{Allocated: true, Data: true, Offset: -1}, pData, nil
	}
	return block.Status{Allocated: true, Zero: true, Offset: -1}, pZero, nil
}
