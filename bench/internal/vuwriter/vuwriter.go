// Package vuwriter is a benchmark's guest: the Go virtio-blk driver over
// a vhost-user front end (vm/vutransport), so that one client writes
// through minivmm's vhost-user-blk export and qemu-storage-daemon's
// alike, the device path a VM's requests take, and times each request.
package vuwriter

import (
	"fmt"
	"time"

	"minivmm/vm/blkdriver"
	"minivmm/vm/vutransport"
)

// memBytes is the guest memory: rings and one request's buffer.
const memBytes = 1 << 20

// Writer writes blocks through one queue at depth 1.
type Writer struct {
	disk *vutransport.Disk
	buf  blkdriver.Region
}

// Dial connects to the vhost-user-blk socket at path and sets the device
// up with one queue.
func Dial(path string) (*Writer, error) {
	disk, err := vutransport.Open(path, memBytes, blkdriver.Options{Queues: 1, QueueSize: 16})
	if err != nil {
		return nil, err
	}
	buf, err := disk.Memory().Alloc(64<<10, 4096)
	if err != nil {
		disk.Close()
		return nil, err
	}
	for i := range buf.B {
		buf.B[i] = byte(i*7 + 1)
	}
	return &Writer{disk: disk, buf: buf}, nil
}

// Capacity is the device's size in bytes.
func (w *Writer) Capacity() int64 { return w.disk.Capacity() }

// Write writes n bytes (at most 64 KiB, a multiple of 512) at off and
// says how long the request took, from its submission to its completion.
func (w *Writer) Write(off int64, n int) (time.Duration, error) {
	if n > len(w.buf.B) || n%blkdriver.SectorSize != 0 || off%blkdriver.SectorSize != 0 {
		return 0, fmt.Errorf("vuwriter: write of %d bytes at %d", n, off)
	}
	r := &blkdriver.Request{Type: blkdriver.TypeOut, Sector: uint64(off / blkdriver.SectorSize),
		Data: []blkdriver.Region{w.buf.Sub(0, n)}}
	start := time.Now()
	err := w.disk.Queues()[0].Do(r)
	return time.Since(start), err
}

// Close resets the device, disconnects and frees the guest memory.
func (w *Writer) Close() error { return w.disk.Close() }
