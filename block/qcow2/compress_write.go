package qcow2

// Compressed writes (qemu-img convert -c): a whole guest cluster not yet
// written is compressed and stored at byte granularity, packed after the
// previous compressed cluster's bytes as QEMU's qcow2_alloc_bytes does.
// Every host cluster the bytes span gets one more reference; as for any
// allocation, the metadata write-back puts the refcounts on disk before
// the L2 entry (compressed flag, no COPIED) that points to them.

import (
	"bytes"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/zstd"
)

// ErrCompressedTarget is a compressed write to a cluster that is already
// allocated: the caller writes it normally instead, as QEMU requires
// compressed writes to go to clusters not yet written.
var ErrCompressedTarget = errors.New("qcow2: compressed writes need an unallocated cluster")

// compState is the packing state of an image: where the next compressed
// bytes may go, and the L2 entry of the last compressed cluster stored
// before it. The packing point is used only while that entry is still in
// place: it holds a reference on the host cluster, so the cluster has not
// been freed (and reused for something else) since.
type compState struct {
	freeByte int64 // 0: none
	lastC    int64
	lastE    uint64
}

var (
	zstdEncOnce sync.Once
	zstdEnc     *zstd.Encoder
	zstdEncErr  error
	deflatePool sync.Pool // *flate.Writer
)

// compressCluster compresses src with the image's compression type. QEMU
// inflates with a 4 KiB window (raw deflate, window bits -12), so deflate
// output must not refer further back than 4 KiB.
func compressCluster(typ uint8, src []byte) ([]byte, error) {
	switch typ {
	case compressionDeflate:
		var buf bytes.Buffer
		buf.Grow(len(src))
		var w *flate.Writer
		if v := deflatePool.Get(); v != nil {
			w = v.(*flate.Writer)
			w.Reset(&buf)
		} else {
			var err error
			if w, err = flate.NewWriterWindow(&buf, 4096); err != nil {
				return nil, err
			}
		}
		if _, err := w.Write(src); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		deflatePool.Put(w)
		return buf.Bytes(), nil
	case compressionZstd:
		zstdEncOnce.Do(func() {
			zstdEnc, zstdEncErr = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		})
		if zstdEncErr != nil {
			return nil, zstdEncErr
		}
		return zstdEnc.EncodeAll(src, make([]byte, 0, len(src))), nil
	}
	return nil, fmt.Errorf("qcow2: unknown compression type %d", typ)
}

// WriteCompressed writes p, exactly one cluster, at the cluster-aligned
// guest offset off, compressed. The cluster must be unallocated or zero
// without a host cluster: otherwise ErrCompressedTarget, and nothing is
// written. Data that does not compress is written as a normal cluster.
func (img *image) WriteCompressed(p []byte, off int64) error {
	cs := img.clusterSize
	if int64(len(p)) != cs || off < 0 || off&(cs-1) != 0 {
		return fmt.Errorf("qcow2: compressed writes take one whole cluster at a cluster-aligned offset: %w", ErrCompressedTarget)
	}
	if img.external() {
		return errDataFileCompose // QEMU: no compressed clusters in a data file
	}
	data, err := compressCluster(img.hdr.CompressionType, p)
	if err != nil {
		return err
	}
	if err := img.begin(); err != nil {
		return err
	}
	defer img.wmu.Unlock()
	// The image's last cluster may end past its end: the caller pads it
	// (with zeroes), as QEMU pads it.
	if off >= img.length {
		return fmt.Errorf("qcow2: compressed write past the end of the image: %w", ErrCompressedTarget)
	}
	c := off >> img.clusterBits
	_, e, _, err := img.l2Slot(c)
	if err != nil {
		return err
	}
	if e&flagCompressed != 0 || e&offsetMask != 0 {
		return ErrCompressedTarget
	}
	if int64(len(data)) >= cs {
		return img.writeLocked(p[:min(cs, img.length-off)], off)
	}
	l2Off, err := img.ensureL2(c >> img.l2Bits)
	if err != nil {
		return err
	}
	start, err := img.allocCompressed(int64(len(data)))
	if err != nil {
		return err
	}
	if start >= 1<<img.csizeShift {
		for k := start / cs; k <= (start+int64(len(data))-1)/cs; k++ {
			img.rc.release(k, 1)
		}
		return errors.New("qcow2: compressed data offset too large for the L2 entry")
	}
	nb := uint64((start+int64(len(data))-1)>>9 - start>>9)
	desc := uint64(flagCompressed) | nb<<img.csizeShift | uint64(start)
	// Until the L2 entry points to them, a failure drops the references
	// allocCompressed took.
	abort := func(err error) error {
		for k := start / cs; k <= (start+int64(len(data))-1)/cs; k++ {
			img.rc.release(k, 1)
		}
		return err
	}
	img.file.Event("write_compressed")
	if err := img.checkedWrite(data, start, 0); err != nil {
		return abort(err)
	}
	img.dropCached(desc)
	if err := img.setL2(l2Off, c, desc); err != nil {
		return abort(err)
	}
	st := &img.comp
	st.freeByte = start + int64(len(data))
	if st.freeByte&(cs-1) == 0 {
		st.freeByte = 0
	}
	st.lastC, st.lastE = c, desc
	return nil
}

// allocCompressed finds room for size bytes (less than a cluster) and
// takes one reference on every host cluster they span: after the last
// compressed bytes when the cluster holding them is still in use for
// them, else in fresh clusters.
func (img *image) allocCompressed(size int64) (int64, error) {
	img.file.Event("cluster_alloc_bytes")
	cs := img.clusterSize
	rc := img.rc
	st := &img.comp
	if fb := st.freeByte; fb != 0 {
		k := fb / cs
		_, e, _, err := img.l2Slot(st.lastC)
		if err != nil {
			return 0, err
		}
		v, err := rc.get(k)
		if err != nil {
			return 0, err
		}
		if e == st.lastE && v >= 1 && v < rc.max {
			switch {
			case fb+size <= (k+1)*cs:
				if err := rc.add(k, 1); err != nil {
					return 0, err
				}
				return fb, nil
			case rc.end == k+1:
				// Span into clusters appended right after k.
				n := (fb + size - (k+1)*cs + cs - 1) / cs
				got, err := rc.allocContiguous(n)
				if err != nil {
					return 0, err
				}
				if got == (k+1)*cs {
					if err := rc.add(k, 1); err != nil {
						return 0, err
					}
					return fb, nil
				}
				// Not adjacent after all (cannot happen): give them back.
				for i := range n {
					if err := rc.set(got/cs+i, 0); err != nil {
						return 0, err
					}
				}
			}
		}
		st.freeByte = 0
	}
	return rc.alloc()
}

// dropCached forgets a decompressed cluster cached under key: a new
// compressed cluster may get the descriptor of one freed before.
func (img *image) dropCached(key uint64) {
	cc := img.compressed
	if cc == nil {
		return
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for i, k := range cc.keys {
		if k == key {
			cc.data[i] = nil
		}
	}
}

// ClusterSize is the image's cluster size (the unit of WriteCompressed).
func (img *image) ClusterSize() int64 { return img.clusterSize }
