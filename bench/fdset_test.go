package bench

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/qemuopen"
)

// fdsetFixture is a registry holding set 0 with an O_RDONLY and an O_RDWR fd
// of one file, as libvirt passes a disk for auto-read-only.
func fdsetFixture(b *testing.B) (*qemuopen.Registry, string) {
	b.Helper()
	path := filepath.Join(b.TempDir(), "img")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		b.Fatal(err)
	}
	r := qemuopen.New(qemuopen.Config{})
	b.Cleanup(r.CloseAll)
	set := int64(0)
	for _, mode := range []int{unix.O_RDONLY, unix.O_RDWR} {
		fd, err := unix.Open(path, mode|unix.O_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := r.AddFd(fd, qemuopen.AddRequest{SetID: &set}); err != nil {
			b.Fatal(err)
		}
	}
	return r, path
}

// BenchmarkQemuOpenFdset is Open+Close of /dev/fdset/0 for read-write: the
// second fd of the set matches. Compare with BenchmarkDupBaseline.
func BenchmarkQemuOpenFdset(b *testing.B) {
	r, _ := fdsetFixture(b)
	b.ReportAllocs()
	for b.Loop() {
		fd, err := r.Open("/dev/fdset/0", unix.O_RDWR)
		if err != nil {
			b.Fatal(err)
		}
		r.Close(fd)
	}
}

// BenchmarkDupBaseline is the floor an fdset open cannot go below:
// F_DUPFD_CLOEXEC and close of one fd.
func BenchmarkDupBaseline(b *testing.B) {
	_, path := fdsetFixture(b)
	src, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(src)
	b.ReportAllocs()
	for b.Loop() {
		fd, err := unix.FcntlInt(uintptr(src), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
}

// BenchmarkOpenPath is Open+Close of a plain path through the registry.
func BenchmarkOpenPath(b *testing.B) {
	r, path := fdsetFixture(b)
	b.ReportAllocs()
	for b.Loop() {
		fd, err := r.Open(path, unix.O_RDWR)
		if err != nil {
			b.Fatal(err)
		}
		r.Close(fd)
	}
}
