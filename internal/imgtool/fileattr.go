package imgtool

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux's file attribute ioctls that QEMU's file driver uses at create.
const (
	fsNoCOWFlag     = 0x00800000 // FS_NOCOW_FL
	fsXflagExtsize  = 0x00000800 // FS_XFLAG_EXTSIZE
	fsIocFsGetXattr = 0x801c581f // FS_IOC_FSGETXATTR
	fsIocFsSetXattr = 0x401c5820 // FS_IOC_FSSETXATTR
)

// fsxattr is struct fsxattr (linux/fs.h).
type fsxattr struct {
	xflags, extsize, nextents, projid, cowextsize uint32
	pad                                           [8]byte
}

// setNoCOW turns copy-on-write off (btrfs); as in QEMU, failing is no
// error: it is an optimisation.
func setNoCOW(fd int) {
	if attr, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS); err == nil {
		unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(attr|fsNoCOWFlag))
	}
}

// setExtentSizeHint asks the file system (XFS) to allocate in extents of
// hint bytes, as QEMU's file driver does at create.
func setExtentSizeHint(fd int, hint uint32) error {
	var attr fsxattr
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFsGetXattr, uintptr(unsafe.Pointer(&attr))); e != 0 {
		return e
	}
	attr.xflags |= fsXflagExtsize
	attr.extsize = hint
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFsSetXattr, uintptr(unsafe.Pointer(&attr))); e != 0 {
		return e
	}
	return nil
}
