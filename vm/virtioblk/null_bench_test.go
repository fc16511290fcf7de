package virtioblk_test

import (
	"testing"

	"minivmm/block"
)

// nullDisk completes every request at once without touching anything.
type nullDisk struct{}

func (nullDisk) ReadV(bufs [][]byte, off int64) (int, error)                      { return 4096, nil }
func (nullDisk) WriteV(bufs [][]byte, off int64, f block.WriteFlags) (int, error) { return 4096, nil }
func (nullDisk) Flush() error                                                     { return nil }
func (nullDisk) Discard(off, length int64) error                                  { return nil }
func (nullDisk) WriteZeroes(off, length int64, unmap bool) error                  { return nil }
func (nullDisk) Length() int64                                                    { return benchImage }

// BenchmarkNullDevice is the device model's own cost per request (and the
// test driver's), on a disk that does nothing, at depth 1.
func BenchmarkNullDevice(b *testing.B) {
	db := newDeviceBench(b, nullDisk{}, false, 1)
	defer db.close()
	offs := offsets(b.N)
	b.ResetTimer()
	db.run(offs)
}
