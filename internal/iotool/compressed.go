package iotool

import (
	"errors"

	"golang.org/x/sys/unix"

	"minivmm/block/qcow2"
)

// compressedWriter is a format that writes whole clusters compressed
// (qcow2).
type compressedWriter interface {
	WriteCompressed(p []byte, off int64) error
	ClusterSize() int64
}

// writeCompressed is write -c, as QEMU's qcow2 does it: the request
// starts on a cluster boundary and covers whole clusters, but for a last
// one cut short by the end of the image, which is padded with zeroes;
// each cluster must not be allocated yet (Input/output error otherwise).
// Formats without compression refuse it.
func (t *ioTool) writeCompressed(p []byte, off int64) error {
	cw, ok := t.node.Image().(compressedWriter)
	if !ok {
		return unix.ENOTSUP
	}
	cs, end := cw.ClusterSize(), t.node.Length()
	n := int64(len(p))
	if off%cs != 0 || n%cs != 0 && off+n != end {
		return unix.EINVAL
	}
	for pos := int64(0); pos < n; pos += cs {
		chunk := p[pos:min(pos+cs, n)]
		if int64(len(chunk)) < cs {
			padded := make([]byte, cs)
			copy(padded, chunk)
			chunk = padded
		}
		if err := cw.WriteCompressed(chunk, off+pos); err != nil {
			if errors.Is(err, qcow2.ErrCompressedTarget) {
				return unix.EIO
			}
			return err
		}
	}
	if t.writethrough {
		return t.node.Flush()
	}
	return nil
}
