package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"testing"

	"minivmm/internal/fdtest"
)

func TestCompressWrite(t *testing.T) {
	fdtest.Check(t)
	needQemu(t)
	for _, ct := range []string{"zlib", "zstd"} {
		for _, cs := range []int64{4096, 65536} {
			t.Run(fmt.Sprintf("%s-%d", ct, cs), func(t *testing.T) {
				t.Parallel()
				g := parallelFixture(t)
				dir := t.TempDir()
				path := filepath.Join(dir, "c.qcow2")
				size := 16 * cs
				out, err := exec.Command("qemu-img", "create", "-f", "qcow2", "-o",
					fmt.Sprintf("cluster_size=%d,compression_type=%s", cs, ct), path, fmt.Sprint(size)).CombinedOutput()
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				n, _ := openRW(t, g, path)
				img := n.Image().(*image)
				shadow := make([]byte, size)
				r := rand.New(rand.NewPCG(uint64(cs), 5))
				compressible := func(i int64) []byte {
					b := make([]byte, cs)
					for j := range b {
						b[j] = byte(r.IntN(4)) + byte(i)
					}
					return b
				}
				put := func(i int64, b []byte) {
					t.Helper()
					if err := img.WriteCompressed(b, i*cs); err != nil {
						t.Fatalf("cluster %d: %v", i, err)
					}
					copy(shadow[i*cs:], b)
				}
				isCompressed := func(i int64) bool {
					_, e, _, err := img.l2Slot(i)
					if err != nil {
						t.Fatal(err)
					}
					return e&flagCompressed != 0
				}
				for i := range int64(4) {
					put(i, compressible(i))
				}
				noise := make([]byte, cs)
				for j := range noise {
					noise[j] = byte(r.Uint32())
				}
				put(4, noise) // does not compress: a normal cluster
				if isCompressed(4) || !isCompressed(0) || !isCompressed(3) {
					t.Fatal("wrong cluster kinds")
				}
				for _, i := range []int64{0, 4} {
					if err := img.WriteCompressed(compressible(9), i*cs); !errors.Is(err, ErrCompressedTarget) {
						t.Fatalf("cluster %d rewritten compressed: %v", i, err)
					}
				}
				if err := img.WriteCompressed(make([]byte, cs-1), 5*cs); !errors.Is(err, ErrCompressedTarget) {
					t.Fatalf("partial cluster: %v", err)
				}
				// Guest writes over every compressed cluster free the
				// packed host clusters; later compressed writes must not
				// pack into a host cluster reused for data.
				for i := range int64(4) {
					b := bytes.Repeat([]byte{byte(0x40 + i)}, int(cs))
					if _, err := n.WriteAt(b, i*cs); err != nil {
						t.Fatal(err)
					}
					copy(shadow[i*cs:], b)
				}
				for i := int64(5); i < 12; i++ {
					put(i, compressible(i))
				}
				if err := n.WriteZeroes(12*cs, cs, false); err != nil {
					t.Fatal(err)
				}
				put(12, compressible(12)) // a zero cluster without a host cluster
				if !isCompressed(12) {
					t.Fatal("cluster 12 not compressed")
				}
				if !bytes.Equal(readAll(t, n), shadow) {
					t.Fatal("read back differs")
				}
				if err := n.Flush(); err != nil {
					t.Fatal(err)
				}
				qemuCheck(t, path, false)
				qemuCompare(t, path, writeTemp(t, "want.raw", shadow))
			})
		}
	}
}
