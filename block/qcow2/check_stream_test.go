package qcow2

import (
	"io"
	"math/rand/v2"
	"testing"

	"minivmm/block"
)

// hugeL1Image is an image whose header claims a 32 MiB L1 table that
// starts in 256 KiB of random bytes and runs far past the end of the file.
func hugeL1Image(t testing.TB) string {
	img := newTestImage(16, 1<<20)
	img.h.L1Size = maxL1Bytes / 8
	img.h.L1TableOffset = uint64(8 * img.cs())
	r := rand.New(rand.NewPCG(1, 1))
	junk := make([]byte, 256<<10)
	for i := range junk {
		junk[i] = byte(r.Uint32())
	}
	img.put(8*img.cs(), junk)
	return img.write(t)
}

// TestCheckL1PastEOF: only the entries of an L1 table inside the file are
// held; the rest read as zero.
func TestCheckL1PastEOF(t *testing.T) {
	g := fixture(t)
	f, err := g.Add(block.Options{"driver": "file", "filename": hugeL1Image(t)})
	if err != nil {
		t.Fatal(err)
	}
	l1, err := readL1(f, 8<<16, maxL1Bytes/8)
	if err != nil {
		t.Fatal(err)
	}
	if want := (f.Length() - 8<<16) / 8; int64(len(l1)) != want {
		t.Fatalf("%d entries held, want the %d inside the file", len(l1), want)
	}
	res, err := Check(f, io.Discard)
	if err != nil || res.Corruptions == 0 {
		t.Fatalf("check of an L1 table of junk: %v, %+v", err, res)
	}
}

// BenchmarkCheckHugeL1: the check of hugeL1Image; B/op is the memory a
// hostile header makes it take (qemu-img check: about 75 MB resident).
func BenchmarkCheckHugeL1(b *testing.B) {
	g := fixture(b)
	f, err := g.Add(block.Options{"driver": "file", "filename": hugeL1Image(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		Check(f, io.Discard)
	}
}
