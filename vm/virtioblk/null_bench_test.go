package virtioblk_test

import (
	"testing"

	"minivmm/block"
)

type nullDisk struct{}

func (nullDisk) ReadV(bufs [][]byte, off int64) (int, error)                      { return 4096, nil }
func (nullDisk) WriteV(bufs [][]byte, off int64, f block.WriteFlags) (int, error) { return 4096, nil }
func (nullDisk) Flush() error                                                     { return nil }
func (nullDisk) Discard(off, length int64) error                                  { return nil }
func (nullDisk) WriteZeroes(off, length int64, unmap bool) error                  { return nil }
func (nullDisk) Length() int64                                                    { return benchImage }

func BenchmarkNullDevice(b *testing.B) {
	db := newDeviceBench(b, nullDisk{}, false, 1)
	defer db.close()
	offs := offsets(b.N)
	b.ResetTimer()
	db.run(offs)
}
