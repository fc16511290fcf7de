package imgtool

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// TestImgCorruptionInterop: corruption found while writing, told as
// QEMU tells it (and the corrupt bit set); check -r clearing unknown
// autoclear bits; unknown incompatible features named. By both tools.
func TestImgCorruptionInterop(t *testing.T) {
	needQemuCheck(t)
	// An image whose L2 entry points into the refcount table.
	dir := t.TempDir()
	k := filepath.Join(dir, "k.qcow2")
	runTool(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", k, "1M")
	runTool(t, dir, "qemu-io", "-c", "write -P 1 0 4k", k)
	f, err := os.OpenFile(k, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	u64 := func(off int64) uint64 {
		var b [8]byte
		f.ReadAt(b[:], off)
		return binary.BigEndian.Uint64(b[:])
	}
	l1, rt := u64(40), u64(48)
	l2 := u64(int64(l1)) & 0x00fffffffffffe00
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], 1<<63|rt)
	f.WriteAt(b[:], int64(l2))
	f.Close()

	setup := []diffStep{
		img("create", "-f", "raw", "src.raw", "64k"), qio("-f", "raw", "-c", "write -P 9 0 64k", "src.raw"),
		img("create", "-f", "qcow2", "g.qcow2", "1M"), img("create", "-f", "qcow2", "h.qcow2", "1M"),
	}
	cases := []diffCase{{name: "corrupt-write", setup: setup, images: []string{"k.qcow2", "g.qcow2", "h.qcow2"}, steps: []diffStep{
		img("convert", "-n", "-f", "raw", "-O", "qcow2", "src.raw", "k.qcow2"),
		img("convert", "-n", "-f", "raw", "-O", "qcow2", "src.raw", "k.qcow2"),
		img("check", "-r", "all", "g.qcow2"), img("check", "-r", "leaks", "h.qcow2"),
	}}}
	// The corrupt image and the autoclear bits go in before the copies.
	cases[0].setup = append(cases[0].setup, diffStep{tool: "sh", args: []string{"-c",
		"cp " + k + " k.qcow2 && printf '\\000\\000\\000\\000\\000\\000\\000\\240' | dd of=g.qcow2 bs=1 seek=88 conv=notrunc status=none" +
			" && printf '\\000\\000\\000\\000\\000\\000\\000\\240' | dd of=h.qcow2 bs=1 seek=88 conv=notrunc status=none"}})
	runDiffCases(t, cases)
}
