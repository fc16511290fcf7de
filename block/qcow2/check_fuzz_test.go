package qcow2

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"minivmm/block"
)

// FuzzCheckRepair runs check, then check -r all, then check again, on
// arbitrary bytes (the snapshot table reader of the check, the refcount
// rebuild and the snapshot table rewrite among them): errors are fine; a
// panic, a large allocation, or a repair that ends without error on an
// image the next check finds corrupt is not.
func FuzzCheckRepair(f *testing.F) {
	for _, seed := range fuzzSeeds() {
		f.Add(seed)
		// The same image with its refcount table entry zeroed (a rebuild)
		// and with a snapshot entry of too much extra data.
		b := append([]byte(nil), seed...)
		if rt := binary.BigEndian.Uint64(b[48:]); rt+8 <= uint64(len(b)) {
			binary.BigEndian.PutUint64(b[rt:], 0)
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			return
		}
		path := filepath.Join(t.TempDir(), "fuzz.qcow2")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		g := fixture(t)
		file, err := g.Add(block.Options{"driver": "file", "filename": path, "read-only": false, "locking": "off"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := g.Attach("", file, block.Perm{Write: true, Image: true}); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		Check(file, io.Discard)
		rr, rerr := Repair(file, io.Discard, FixLeaks|FixErrors)
		res, err := Check(file, io.Discard)
		runtime.ReadMemStats(&after)
		if rerr == nil && rr != nil && rr.CheckErrors == 0 && err == nil && res.Corruptions > 0 && file.Length() < 64<<20 {
			// What a repair leaves must check clean, unless it said it
			// could not fix everything (pointers past the end, overflow).
			if rr.Corruptions == 0 {
				t.Fatalf("check -r all ended clean, yet check finds %d corruptions", res.Corruptions)
			}
		}
		if a := after.TotalAlloc - before.TotalAlloc; a > 512<<20 {
			t.Fatalf("allocated %d MiB for a %d-byte image", a>>20, len(data))
		}
	})
}
