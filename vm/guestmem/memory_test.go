package guestmem_test

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
	"minivmm/vm/guestmem"
)

// TestMemfdShared: the memory is shared through its fd: what one mapping
// writes, another mapping of the fd (another process's) reads.
func TestMemfdShared(t *testing.T) {
	fdtest.Check(t)
	m, err := guestmem.NewMemfd("guest", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	b, err := m.Slice(0x1000, 4)
	if err != nil {
		t.Fatal(err)
	}
	copy(b, "abcd")
	other, err := unix.Mmap(m.Fd(0), 0, 1<<20, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(other)
	if string(other[0x1000:0x1004]) != "abcd" {
		t.Fatalf("other mapping reads %q", other[0x1000:0x1004])
	}
	r := m.Regions()
	if len(r) != 1 || r[0].GPA != 0 || r[0].Size != 1<<20 || r[0].UserAddr == 0 {
		t.Fatalf("regions %+v", r)
	}
	if gpa, err := m.UserToGPA(r[0].UserAddr + 0x1234); err != nil || gpa != 0x1234 {
		t.Fatalf("UserToGPA: %#x, %v", gpa, err)
	}
}

// TestSliceBounds: a slice must lie inside one region; anything else is
// an *AddrError, including ranges that wrap around.
func TestSliceBounds(t *testing.T) {
	fdtest.Check(t)
	m, err := guestmem.NewMemfd("guest", 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tc := range []struct {
		gpa, n uint64
		ok     bool
	}{
		{0, 1 << 16, true},
		{1<<16 - 1, 1, true},
		{1 << 16, 0, true},
		{1 << 16, 1, false},
		{1<<16 - 1, 2, false},
		{0, 1<<16 + 1, false},
		{^uint64(0), 2, false},
		{1 << 40, 1, false},
		{100, ^uint64(0) - 50, false},
	} {
		b, err := m.Slice(tc.gpa, tc.n)
		var ae *guestmem.AddrError
		if tc.ok != (err == nil) || !tc.ok && !errors.As(err, &ae) || tc.ok && uint64(len(b)) != tc.n || cap(b) != len(b) {
			t.Errorf("Slice(%#x, %#x): len %d, %v", tc.gpa, tc.n, len(b), err)
		}
		if _, err := m.AppendSlices(nil, tc.gpa, tc.n); tc.ok != (err == nil) {
			t.Errorf("AppendSlices(%#x, %#x): %v", tc.gpa, tc.n, err)
		}
	}
	if _, err := m.UserToGPA(1); err == nil {
		t.Error("UserToGPA of an unmapped address succeeded")
	}
}

func memfd(t *testing.T, size int64) int {
	t.Helper()
	fd, err := unix.MemfdCreate("spec", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestMapBadSpecs: a bad table of regions is refused, and every fd it
// carried is closed all the same (Map owns them), nothing stays mapped.
func TestMapBadSpecs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs func(t *testing.T) []guestmem.RegionSpec
	}{
		{"overlap", func(t *testing.T) []guestmem.RegionSpec {
			return []guestmem.RegionSpec{
				{Fd: memfd(t, 1<<20), GPA: 1 << 20, Size: 1 << 20},
				{Fd: memfd(t, 1<<20), GPA: 0x180000, Size: 1 << 20},
			}
		}},
		{"zero size", func(t *testing.T) []guestmem.RegionSpec {
			return []guestmem.RegionSpec{{Fd: memfd(t, 4096), Size: 4096}, {Fd: memfd(t, 4096), GPA: 8192}}
		}},
		{"GPA wraps", func(t *testing.T) []guestmem.RegionSpec {
			return []guestmem.RegionSpec{{Fd: memfd(t, 4096), GPA: ^uint64(0) - 10, Size: 4096}}
		}},
		{"user address wraps", func(t *testing.T) []guestmem.RegionSpec {
			return []guestmem.RegionSpec{{Fd: memfd(t, 4096), Size: 4096, UserAddr: ^uint64(0)}}
		}},
		{"huge offset", func(t *testing.T) []guestmem.RegionSpec {
			return []guestmem.RegionSpec{{Fd: memfd(t, 4096), Size: 4096}, {Fd: memfd(t, 4096), GPA: 1 << 30, Size: 4096, MmapOffset: 1 << 62}}
		}},
		{"not mappable", func(t *testing.T) []guestmem.RegionSpec {
			r, w, err := pipe()
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(w)
			return []guestmem.RegionSpec{{Fd: memfd(t, 4096), Size: 4096}, {Fd: r, GPA: 1 << 20, Size: 4096}}
		}},
		{"same fd twice", func(t *testing.T) []guestmem.RegionSpec {
			fd := memfd(t, 8192)
			return []guestmem.RegionSpec{{Fd: fd, Size: 4096}, {Fd: fd, GPA: 1 << 20, Size: 4096, MmapOffset: 4096}}
		}},
		{"past the file's end", func(t *testing.T) []guestmem.RegionSpec {
			return []guestmem.RegionSpec{{Fd: memfd(t, 4096), Size: 8192}}
		}},
		{"offset past the file's end", func(t *testing.T) []guestmem.RegionSpec {
			return []guestmem.RegionSpec{{Fd: memfd(t, 8192), Size: 4096, MmapOffset: 4097}}
		}},
		{"negative fd", func(t *testing.T) []guestmem.RegionSpec {
			return []guestmem.RegionSpec{{Fd: memfd(t, 4096), Size: 4096}, {Fd: -1, GPA: 1 << 20, Size: 4096}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fdtest.Check(t)
			m, err := guestmem.Map(tc.specs(t))
			if err == nil {
				m.Close()
				t.Fatal("Map accepted it")
			}
		})
	}
}

func pipe() (int, int, error) {
	var p [2]int
	err := unix.Pipe2(p[:], unix.O_CLOEXEC)
	return p[0], p[1], err
}

// TestMemfdSealed: memory minivmm makes cannot be shrunk (or grown) by
// whoever it is passed to.
func TestMemfdSealed(t *testing.T) {
	fdtest.Check(t)
	m, err := guestmem.NewMemfd("sealed", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := unix.Ftruncate(m.Fd(0), 4096); err == nil {
		t.Fatal("a guest memory fd could be shrunk")
	}
}

// TestMapOffsets: a region at an fd offset (QEMU's RAM above 4 GiB is
// the same memfd further on) reads the fd's bytes at that offset.
func TestMapOffsets(t *testing.T) {
	fdtest.Check(t)
	src, err := guestmem.NewMemfd("ram", 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	whole, _ := src.Slice(0, 3<<20)
	copy(whole[0x201000:], "high")
	fd1, _ := unix.FcntlInt(uintptr(src.Fd(0)), unix.F_DUPFD_CLOEXEC, 0)
	fd2, _ := unix.FcntlInt(uintptr(src.Fd(0)), unix.F_DUPFD_CLOEXEC, 0)
	m, err := guestmem.Map([]guestmem.RegionSpec{
		{Fd: fd2, GPA: 4 << 30, Size: 1 << 20, UserAddr: 0x5000_0000 + 2<<20, MmapOffset: 2 << 20},
		{Fd: fd1, GPA: 0, Size: 2 << 20, UserAddr: 0x5000_0000},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if b, err := m.Slice(4<<30+0x1000, 4); err != nil || string(b) != "high" {
		t.Fatalf("Slice above 4G: %q, %v", b, err)
	}
	if gpa, err := m.UserToGPA(0x5000_0000 + 2<<20 + 0x1000); err != nil || gpa != 4<<30+0x1000 {
		t.Fatalf("UserToGPA: %#x, %v", gpa, err)
	}
	if r := m.Regions(); r[0].GPA != 0 || r[1].GPA != 4<<30 {
		t.Fatalf("regions not in GPA order: %+v", r)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
