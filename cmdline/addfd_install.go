package cmdline

import (
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"minivmm/qemuopen"
)

// AddFds installs every -add-fd of occ in reg, in order, as the VMM and the
// img and io tools all do: each fd is checked as QEMU checks it and
// duplicated into its set (with FD_CLOEXEC); the originals are closed only
// after all are parsed, so one fd may be named by several options.
func AddFds(reg *qemuopen.Registry, occ []Occurrence) error {
	var originals []int
	defer func() {
		for _, fd := range originals {
			unix.Close(fd)
		}
	}()
	for _, oc := range occ {
		if oc.Name != "add-fd" {
			continue
		}
		a, err := ParseAddFd(oc.Value)
		if err != nil {
			return oc.Wrap(err)
		}
		dup, err := unix.FcntlInt(uintptr(a.Fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return oc.Wrap(fmt.Errorf("Failed to dup() fd %d: %w", a.Fd, err))
		}
		set := a.Set
		if _, _, err := reg.AddFd(dup, qemuopen.AddRequest{SetID: &set, Opaque: a.Opaque, Owner: qemuopen.CommandLine}); err != nil {
			return oc.Wrap(err)
		}
		if !slices.Contains(originals, a.Fd) {
			originals = append(originals, a.Fd)
		}
	}
	return nil
}
