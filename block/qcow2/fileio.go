package qcow2

import (
	"math"

	"minivmm/block"
)

// readFile reads len(p) bytes of file at off. Past the end of the file it
// reads zeroes, as a read of the host file does in QEMU, so that metadata
// or data a hostile (or truncated) image places there reads as zero.
func readFile(file *block.Node, p []byte, off int64) error {
	size := file.Length()
	if off < 0 || off >= size {
		clear(p)
		return nil
	}
	if n := size - off; int64(len(p)) > n {
		clear(p[n:])
		p = p[:n]
	}
	_, err := file.ReadAt(p, off)
	return err
}

// chunkReader reads small pieces of a table that starts at base in the
// file, a chunk at a time, for tables walked entry by entry (snapshots).
type chunkReader struct {
	file   *block.Node
	base   int64
	buf    []byte
	bufOff int64 // offset from base of buf; -1: empty
}

const chunkSize = 64 << 10

func newChunkReader(file *block.Node) *chunkReader {
	return &chunkReader{file: file, bufOff: -1}
}

// read fills p from offset off of the table.
func (r *chunkReader) read(p []byte, off int64) error {
	for len(p) > 0 {
		if r.bufOff < 0 || off < r.bufOff || off >= r.bufOff+int64(len(r.buf)) {
			if r.buf == nil {
				r.buf = make([]byte, chunkSize)
			}
			r.bufOff = off &^ (chunkSize - 1)
			abs := r.base + r.bufOff
			if r.bufOff > math.MaxInt64-r.base {
				abs = -1 // beyond any file: zeroes
			}
			if err := readFile(r.file, r.buf, abs); err != nil {
				r.bufOff = -1
				return err
			}
		}
		n := copy(p, r.buf[off-r.bufOff:])
		p, off = p[n:], off+int64(n)
	}
	return nil
}
