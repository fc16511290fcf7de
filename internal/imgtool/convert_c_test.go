package imgtool

// Tests for img convert -c (compressed qcow2 output), against qemu-img.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ccSource writes a raw image of compressible, incompressible and zero
// regions, with a partial last cluster, and returns its contents.
func ccSource(t *testing.T, path string) []byte {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 9))
	var b bytes.Buffer
	b.Write(bytes.Repeat([]byte("minivmm compressible text "), 40000)) // ~1 MiB
	noise := make([]byte, 300<<10)
	for i := range noise {
		noise[i] = byte(r.Uint32())
	}
	b.Write(noise)
	b.Write(make([]byte, 1<<20))
	for range 200 << 10 {
		b.WriteByte(byte(r.IntN(8)))
	}
	b.Write(make([]byte, 3000)) // a zero region smaller than a cluster
	b.Write(bytes.Repeat([]byte{0xab}, 70000))
	b.Write([]byte("tail"))
	for b.Len()%512 != 0 {
		b.WriteByte('x')
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

type ccMapEntry struct {
	Start  int64  `json:"start"`
	Length int64  `json:"length"`
	Data   bool   `json:"data"`
	Offset *int64 `json:"offset"`
}

func TestConvertCompressed(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	for _, ct := range []string{"zlib", "zstd"} {
		for _, cs := range []int{4096, 65536} {
			t.Run(fmt.Sprintf("%s-%d", ct, cs), func(t *testing.T) {
				t.Parallel()
				dir := t.TempDir()
				src := filepath.Join(dir, "src.raw")
				want := ccSource(t, src)
				plain, comp := filepath.Join(dir, "plain.qcow2"), filepath.Join(dir, "comp.qcow2")
				o := fmt.Sprintf("cluster_size=%d,compression_type=%s", cs, ct)
				cvMust(t, "convert", "-f", "raw", "-O", "qcow2", "-o", o, src, plain)
				cvMust(t, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", o, src, comp)
				cvQemu(t, "qemu-img", "check", "-f", "qcow2", comp)
				cvIdentical(t, src, comp)
				info := cvQemu(t, "qemu-img", "info", comp)
				if !strings.Contains(info, "compression type: "+ct) {
					t.Fatalf("compression type not %s:\n%s", ct, info)
				}
				var m []ccMapEntry
				if err := json.Unmarshal([]byte(cvQemu(t, "qemu-img", "map", "--output=json", comp)), &m); err != nil {
					t.Fatal(err)
				}
				var compressed int64
				for _, e := range m {
					if e.Data && e.Offset == nil {
						compressed += e.Length
					}
				}
				if compressed < 1<<20 {
					t.Fatalf("only %d bytes mapped compressed: %+v", compressed, m)
				}
				ps, _ := os.Stat(plain)
				cs2, _ := os.Stat(comp)
				if cs2.Size() >= ps.Size() {
					t.Fatalf("compressed image %d bytes, uncompressed %d", cs2.Size(), ps.Size())
				}
				// minivmm's reader reads it back.
				back := filepath.Join(dir, "back.raw")
				cvMust(t, "convert", "-f", "qcow2", "-O", "raw", comp, back)
				got, _ := os.ReadFile(back)
				if !bytes.Equal(got, want) {
					t.Fatal("minivmm reads the compressed image differently")
				}
				// A guest write over compressed clusters makes them normal.
				if _, errs, code := ioRun([]string{"-f", "qcow2", "-c", "write -P 0x5a 4096 8192", comp}, ""); code != 0 {
					t.Fatalf("minivmm io write: %d %s", code, errs)
				}
				copy(want[4096:4096+8192], bytes.Repeat([]byte{0x5a}, 8192))
				if err := os.WriteFile(src, want, 0o644); err != nil {
					t.Fatal(err)
				}
				cvQemu(t, "qemu-img", "check", "-f", "qcow2", comp)
				cvIdentical(t, src, comp)
			})
		}
	}
}

func TestConvertCompressedRawRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.raw"), filepath.Join(dir, "dst.raw")
	if err := os.WriteFile(src, make([]byte, 65536), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs := cvImg("convert", "-c", "-f", "raw", "-O", "raw", src, dst)
	if code != 1 || !strings.Contains(errs, "Compression not supported for this file format") {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Fatal("the raw destination was created")
	}
}

// -n onto an image already written: allocated clusters are written
// normally (compressed writes go to unwritten clusters only).
func TestConvertCompressedExisting(t *testing.T) {
	icNeedQemuImg(t)
	t.Parallel()
	if _, err := exec.LookPath("qemu-io"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-io not installed; apt-get install qemu-utils")
		}
		t.Skip("qemu-io not installed; apt-get install qemu-utils")
	}
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src.raw"), filepath.Join(dir, "dst.qcow2")
	ccSource(t, src)
	st, _ := os.Stat(src)
	cvQemu(t, "qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4096", dst, fmt.Sprint(st.Size()))
	cvQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 64k", "-c", "write -P 0x66 1536k 64k", dst)
	cvMust(t, "convert", "-n", "-c", "-f", "raw", "-O", "qcow2", src, dst)
	cvQemu(t, "qemu-img", "check", "-f", "qcow2", dst)
	cvIdentical(t, src, dst)
}
