package block_test

import (
	"testing"

	"minivmm/block"
	_ "minivmm/block/nullco"
	"minivmm/qemuopen"
)

// BenchmarkAlignedRequest is the generic layer's cost for an aligned 4
// KiB request on a node without limits (null-co: no IO below), the path
// every guest request takes: request limits must cost it nothing
// measurable. Compare with the same benchmark before them.
func BenchmarkAlignedRequest(b *testing.B) {
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	defer func() { g.Close(); reg.CloseAll() }()
	n, err := g.Add(block.Options{"driver": "null-co", "size": 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	be, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	for _, op := range []string{"read", "write", "readv"} {
		b.Run(op, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				off := int64(i%16384) * 4096
				var err error
				switch op {
				case "read":
					_, err = be.ReadAt(buf, off)
				case "write":
					_, err = be.WriteAt(buf, off)
				case "readv":
					_, err = be.ReadV([][]byte{buf[:2048], buf[2048:]}, off)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
