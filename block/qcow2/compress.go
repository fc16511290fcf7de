package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/klauspost/compress/flate"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// decompressError is a compressed cluster that does not decompress to a
// full cluster: EIO, as in QEMU.
type decompressError struct {
	off int64
	err error
}

func (e *decompressError) Error() string {
	return fmt.Sprintf("qcow2: compressed cluster at host offset %#x: %v", e.off, e.err)
}
func (e *decompressError) Unwrap() error { return unix.EIO }

// decompress fills dst (one cluster) from src, a compressed cluster's
// bytes as stored: raw deflate (no zlib header; QEMU writes it with a
// 4 KiB window, which any inflater reads) or zstd (one or more frames, no
// length prefix). Decompression stops as soon as dst is full: the bytes
// after it may be another cluster's. Too little output is an error.
func decompress(typ uint8, dst, src []byte) error {
	var err error
	switch typ {
	case compressionDeflate:
		err = inflate(dst, src)
	case compressionZstd:
		err = unzstd(dst, src)
	default:
		err = fmt.Errorf("unknown compression type %d", typ)
	}
	return err
}

var flatePool sync.Pool // io.ReadCloser that are flate.Resetter

func inflate(dst, src []byte) error {
	br := bytes.NewReader(src)
	var r io.ReadCloser
	if v := flatePool.Get(); v != nil {
		r = v.(io.ReadCloser)
		if err := r.(flate.Resetter).Reset(br, nil); err != nil {
			return err
		}
	} else {
		r = flate.NewReader(br)
	}
	_, err := io.ReadFull(r, dst)
	flatePool.Put(r)
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// zstdMaxWindow bounds the history a hostile frame can make the decoder
// allocate. QEMU's frames are at most one cluster (2 MiB); 8 MiB also
// takes what zstd's highest levels declare for input of unknown size.
const zstdMaxWindow = 8 << 20

var zstdPool sync.Pool // *zstd.Decoder, single-threaded

func unzstd(dst, src []byte) error {
	var d *zstd.Decoder
	if v := zstdPool.Get(); v != nil {
		d = v.(*zstd.Decoder)
	} else {
		var err error
		d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow),
			zstd.WithDecoderMaxMemory(zstdMaxWindow))
		if err != nil {
			return err
		}
	}
	// A bytes.Reader (not a bytes.Buffer) makes the decoder stream, frame
	// after frame, and stop when dst is full: trailing bytes are not read.
	err := d.Reset(bytes.NewReader(src))
	if err == nil {
		_, err = io.ReadFull(d, dst)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
	}
	d.Reset(nil)
	zstdPool.Put(d)
	return err
}

// clusterCache keeps the last few decompressed clusters, so that small
// sequential reads of a compressed image decompress each cluster once.
// Entries are keyed by their L2 entry, which names the compressed bytes.
type clusterCache struct {
	mu   sync.Mutex
	keys []uint64
	data [][]byte
	next int
}

func newClusterCache(clusterSize int64) *clusterCache {
	n := int(max(2, min(8, (4<<20)/clusterSize)))
	return &clusterCache{keys: make([]uint64, n), data: make([][]byte, n)}
}

func (c *clusterCache) get(key uint64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range c.keys {
		if k == key && c.data[i] != nil {
			return c.data[i]
		}
	}
	return nil
}

func (c *clusterCache) put(key uint64, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.keys[c.next], c.data[c.next] = key, b
	c.next = (c.next + 1) % len(c.keys)
}
