package quorum

import (
	"minivmm/block"
	"minivmm/qemuopen"
)

// QEMU's QuorumOpType.
const (
	opRead  = "read"
	opWrite = "write"
	opFlush = "flush"
)

// sectors is a byte range as QEMU's quorum events give it: the first
// sector and how many sectors the range touches.
func sectors(off, n int64) (int64, int64) {
	start := off / 512
	end := (off + n + 511) / 512
	return start, end - start
}

// reportBad is QUORUM_REPORT_BAD: child failed (err) or disagreed with
// the quorum (err nil) on the range.
func (q *image) reportBad(op string, off, n int64, child string, err error) {
	start, count := sectors(off, n)
	data := []block.EventMember{{Key: "type", Value: op}}
	if err != nil {
		data = append(data, block.EventMember{Key: "error", Value: qemuopen.Strerror(errnoOf(err))})
	}
	data = append(data,
		block.EventMember{Key: "node-name", Value: child},
		block.EventMember{Key: "sector-num", Value: start},
		block.EventMember{Key: "sectors-count", Value: count})
	q.emit(block.DriverEvent{Name: "QUORUM_REPORT_BAD", Data: data})
}

// reportFailure is QUORUM_FAILURE: no quorum on the range.
func (q *image) reportFailure(off, n int64) {
	start, count := sectors(off, n)
	q.emit(block.DriverEvent{Name: "QUORUM_FAILURE", Data: []block.EventMember{
		{Key: "reference", Value: q.name},
		{Key: "sector-num", Value: start},
		{Key: "sectors-count", Value: count},
	}})
}
