package cmdline

import (
	"errors"
	"math"

	"golang.org/x/sys/unix"
)

// The checks of -add-fd, with QEMU's texts.
var (
	ErrFdRequired  = errors.New("fd option is required and must be non-negative")
	ErrFdStdio     = errors.New("fd cannot be a standard I/O stream")
	ErrFdInvalid   = errors.New("fd is not valid or already in use")
	ErrSetRequired = errors.New("set option is required and must be non-negative")
)

// AddFd is one -add-fd option: put inherited descriptor Fd into fd set Set.
type AddFd struct {
	Fd     int
	Set    int64
	Opaque *string // nil when not given
}

var addFdParams = withID(addFdOpts.kinds())

// ParseAddFd parses and checks the argument of -add-fd in QEMU 7.2's
// order. First the string itself, element by element (an unknown key is
// "Invalid parameter 'bogus'", a bad number "Parameter 'fd' expects a
// number"), then: fd given and not negative, fd above 2, fd open
// without FD_CLOEXEC, set given and not negative. Numbers are QemuOpts
// numbers (0x10 and 010 work) read as signed, so fd=-1 and set=2^63 are
// "negative" as in QEMU; an fd above INT_MAX, which QEMU truncates, is
// refused as not valid. The fd is only inspected, not taken.
func ParseAddFd(value string) (AddFd, error) {
	o, err := ParseOpts(value, "")
	if err == nil {
		err = o.Validate(addFdParams)
	}
	if err != nil {
		return AddFd{}, err
	}
	fd, _ := o.Int("fd", -1) // Validate made sure these parse
	set, _ := o.Int("set", -1)
	switch {
	case fd < 0:
		return AddFd{}, ErrFdRequired
	case fd <= 2:
		return AddFd{}, ErrFdStdio
	case fd > math.MaxInt32 || !inherited(int(fd)):
		return AddFd{}, ErrFdInvalid
	case set < 0:
		return AddFd{}, ErrSetRequired
	}
	a := AddFd{Fd: int(fd), Set: set}
	if v, ok := o.Get("opaque"); ok {
		a.Opaque = &v
	}
	return a, nil
}

// inherited tells whether fd is open without FD_CLOEXEC. A descriptor
// the management layer passed down never has the flag, while every one
// the Go runtime opens has it, so -add-fd cannot grab minivmm's own.
func inherited(fd int) bool {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil && flags&unix.FD_CLOEXEC == 0
}
