// Package guestmem is a guest's physical memory as the device model sees
// it: regions of shared memory (memfds), each mapped into this process and
// placed at a guest-physical address. Devices read and write guest buffers
// through slices of these mappings, without copying.
package guestmem

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"
)

// Region is one contiguous piece of guest memory.
type Region struct {
	// GPA is the guest-physical address of the region's first byte.
	GPA uint64
	// Size is the region's length in bytes.
	Size uint64
	// UserAddr is where the front end that owns the memory has it in its
	// own address space (vhost-user rings are given by these addresses);
	// for memory minivmm made itself it is where it is mapped here.
	UserAddr uint64
	// MmapOffset is the offset in the fd where the region starts.
	MmapOffset uint64

	fd  int    // owned; -1 once closed
	mem []byte // the mapping from the fd's offset 0 to MmapOffset+Size
}

// Memory is a guest's memory: regions sorted by GPA, none overlapping.
// Slice is safe for concurrent use; Close is not concurrent with anything.
type Memory struct {
	regions []Region
}

// RegionSpec describes a region to map (a vhost-user SET_MEM_TABLE entry).
type RegionSpec struct {
	Fd                              int
	GPA, Size, UserAddr, MmapOffset uint64
}

// AddrError is an access to guest memory that does not lie inside one
// region: what a device gets for a descriptor that points outside RAM.
type AddrError struct {
	GPA, Len uint64
}

func (e *AddrError) Error() string {
	return fmt.Sprintf("guest memory access [0x%x, +0x%x) is outside guest RAM", e.GPA, e.Len)
}

// ErrBadRegion is a region spec Map refuses (overlap, zero size, wrap-around,
// or an fd that cannot be mapped); the error wrapping it says which.
var ErrBadRegion = errors.New("bad guest memory region")

// maxRegionSize bounds a region to what an int (a Go slice length) holds.
const maxRegionSize = 1<<62 - 1

// NewMemfd makes size bytes of guest memory at GPA 0, backed by a new
// memfd that can be passed to another process (SCM_RIGHTS) to share it.
func NewMemfd(name string, size int64) (*Memory, error) {
	if size <= 0 || size > maxRegionSize {
		return nil, fmt.Errorf("guest memory size %d: %w", size, ErrBadRegion)
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create %q: %w", name, err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("memfd %q: resize to %d: %w", name, size, err)
	}
	// Sealed at its size, as QEMU's memory-backend-memfd (seal=on): a
	// process it is passed to cannot shrink it under our mapping (an
	// access past the end would be a SIGBUS here).
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("memfd %q: seal: %w", name, err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("memfd %q: mmap %d bytes: %w", name, size, err)
	}
	r := Region{GPA: 0, Size: uint64(size), fd: fd, mem: mem}
	r.UserAddr = r.hostAddr()
	return &Memory{regions: []Region{r}}, nil
}

// Map maps the regions a front end describes (vhost-user SET_MEM_TABLE),
// each fd MAP_SHARED, and takes ownership of every fd in specs, whether
// it succeeds or not: on error each fd is closed and nothing stays mapped.
func Map(specs []RegionSpec) (*Memory, error) {
	seen := map[int]bool{}
	for i, s := range specs {
		if seen[s.Fd] {
			for fd := range seen {
				unix.Close(fd)
			}
			return nil, fmt.Errorf("region %d: fd %d given twice: %w", i, s.Fd, ErrBadRegion)
		}
		if s.Fd >= 0 {
			seen[s.Fd] = true
		}
	}
	m := &Memory{}
	fail := func(err error) (*Memory, error) {
		for _, s := range specs[len(m.regions):] {
			if s.Fd >= 0 {
				unix.Close(s.Fd)
			}
		}
		m.Close()
		return nil, err
	}
	for i, s := range specs {
		if err := checkSpec(s); err != nil {
			return fail(fmt.Errorf("region %d: %w", i, err))
		}
		// A mapping past the file's end would fault (SIGBUS) when
		// the device touches it.
		var st unix.Stat_t
		if err := unix.Fstat(s.Fd, &st); err != nil {
			return fail(fmt.Errorf("region %d: fd %d: %w (%w)", i, s.Fd, err, ErrBadRegion))
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG && uint64(st.Size) < s.MmapOffset+s.Size {
			return fail(fmt.Errorf("region %d: fd %d holds %d bytes, the region reaches %d: %w", i, s.Fd, st.Size, s.MmapOffset+s.Size, ErrBadRegion))
		}
		// Mapped from the fd's start, as libvhost-user does, so that
		// an offset need not be page-aligned.
		mem, err := unix.Mmap(s.Fd, 0, int(s.MmapOffset+s.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_NORESERVE)
		if err != nil {
			return fail(fmt.Errorf("region %d: mmap fd %d, %d bytes: %w (%w)", i, s.Fd, s.MmapOffset+s.Size, err, ErrBadRegion))
		}
		m.regions = append(m.regions, Region{GPA: s.GPA, Size: s.Size, UserAddr: s.UserAddr, MmapOffset: s.MmapOffset, fd: s.Fd, mem: mem})
	}
	// The regions are kept in GPA order, for lookups and the overlap check.
	slices.SortFunc(m.regions, func(a, b Region) int {
		switch {
		case a.GPA < b.GPA:
			return -1
		case a.GPA > b.GPA:
			return 1
		}
		return 0
	})
	for i := 1; i < len(m.regions); i++ {
		a, b := m.regions[i-1], m.regions[i]
		if b.GPA < a.GPA+a.Size {
			m.Close()
			return nil, fmt.Errorf("regions at GPA 0x%x and 0x%x overlap: %w", a.GPA, b.GPA, ErrBadRegion)
		}
	}
	return m, nil
}

func checkSpec(s RegionSpec) error {
	switch {
	case s.Fd < 0:
		return fmt.Errorf("fd %d: %w", s.Fd, ErrBadRegion)
	case s.Size == 0 || s.Size > maxRegionSize:
		return fmt.Errorf("size 0x%x: %w", s.Size, ErrBadRegion)
	case s.MmapOffset > maxRegionSize-s.Size:
		return fmt.Errorf("mmap offset 0x%x + size 0x%x: %w", s.MmapOffset, s.Size, ErrBadRegion)
	case s.GPA+s.Size < s.GPA:
		return fmt.Errorf("GPA 0x%x + size 0x%x wraps: %w", s.GPA, s.Size, ErrBadRegion)
	case s.UserAddr+s.Size < s.UserAddr:
		return fmt.Errorf("user address 0x%x + size 0x%x wraps: %w", s.UserAddr, s.Size, ErrBadRegion)
	}
	return nil
}

// find returns the region holding gpa, or nil.
func (m *Memory) find(gpa uint64) *Region {
	for i := range m.regions {
		r := &m.regions[i]
		if gpa >= r.GPA && gpa-r.GPA < r.Size {
			return r
		}
	}
	return nil
}

// Slice is the n bytes of guest memory at gpa, without copying; they must
// lie inside one region. The slice is valid until Close.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	r := m.find(gpa)
	if r == nil || n > r.Size-(gpa-r.GPA) {
		if n == 0 && r == nil {
			// An empty access just past a region's end is still inside.
			if r2 := m.find(gpa - 1); r2 != nil && gpa != 0 {
				off := r2.MmapOffset + r2.Size
				return r2.mem[off:off:off], nil
			}
		}
		return nil, &AddrError{GPA: gpa, Len: n}
	}
	off := r.MmapOffset + (gpa - r.GPA)
	return r.mem[off : off+n : off+n], nil
}

// AppendSlices appends to dst the slices covering n bytes at gpa, which
// may span regions that are adjacent in guest-physical space; an empty
// range appends nothing. A gap or the end of RAM is an *AddrError.
func (m *Memory) AppendSlices(dst [][]byte, gpa, n uint64) ([][]byte, error) {
	if gpa+n < gpa {
		return dst, &AddrError{GPA: gpa, Len: n}
	}
	start, left := gpa, n
	for left > 0 {
		r := m.find(gpa)
		if r == nil {
			return dst, &AddrError{GPA: start, Len: n}
		}
		k := min(left, r.Size-(gpa-r.GPA))
		off := r.MmapOffset + (gpa - r.GPA)
		dst = append(dst, r.mem[off:off+k:off+k])
		gpa += k
		left -= k
	}
	return dst, nil
}

// UserToGPA translates a front end's virtual address (vhost-user ring
// addresses) into a guest-physical one.
func (m *Memory) UserToGPA(uva uint64) (uint64, error) {
	for _, r := range m.regions {
		if uva >= r.UserAddr && uva-r.UserAddr < r.Size {
			return r.GPA + (uva - r.UserAddr), nil
		}
	}
	return 0, fmt.Errorf("front-end address 0x%x is in no guest memory region: %w", uva, &AddrError{GPA: uva, Len: 1})
}

// Regions lists the regions in GPA order.
func (m *Memory) Regions() []Region { return slices.Clone(m.regions) }

// Fd is region i's fd (owned by m: do not close it; dup it to keep it).
func (m *Memory) Fd(i int) int { return m.regions[i].fd }

// Close unmaps every region and closes every fd m owns; slices handed out
// must no longer be used. Closing twice is harmless.
func (m *Memory) Close() error {
	var first error
	for i := range m.regions {
		r := &m.regions[i]
		if r.mem != nil {
			if err := unix.Munmap(r.mem); err != nil && first == nil {
				first = fmt.Errorf("munmap guest memory at GPA 0x%x: %w", r.GPA, err)
			}
			r.mem = nil
		}
		if r.fd >= 0 {
			if err := unix.Close(r.fd); err != nil && first == nil {
				first = fmt.Errorf("close guest memory fd %d: %w", r.fd, err)
			}
			r.fd = -1
		}
	}
	return first
}
