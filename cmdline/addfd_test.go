package cmdline

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

// inheritableFd opens /dev/null without O_CLOEXEC, like an fd a
// management layer passes down, and closes it when the test ends.
func inheritableFd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Open("/dev/null", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestParseAddFd(t *testing.T) {
	fdtest.Check(t)
	fd := inheritableFd(t)
	cloexec, err := os.Open("/dev/null") // Go sets O_CLOEXEC
	if err != nil {
		t.Fatal(err)
	}
	defer cloexec.Close()
	const closed = 1<<20 - 1 // above any open fd
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		in   string
		want AddFd
		err  string // QEMU 7.2's text and order, checked by running it
	}{
		{in: fmt.Sprintf("fd=%d,set=2", fd), want: AddFd{Fd: fd, Set: 2}},
		{in: fmt.Sprintf("set=9223372036854775807,fd=%d,opaque=a,,b", fd), want: AddFd{Fd: fd, Set: 1<<63 - 1, Opaque: str("a,b")}},
		{in: fmt.Sprintf("fd=%#x,set=0x10,opaque=,id=x", fd), want: AddFd{Fd: fd, Set: 16, Opaque: str("")}},
		{in: fmt.Sprintf("fd=1,set=1,fd=%d", fd), want: AddFd{Fd: fd, Set: 1}}, // last fd= wins
		{in: "bogus=1", err: "Invalid parameter 'bogus'"},                      // parse errors come before the checks
		{in: "fd=3,set=2,bogus=1", err: "Invalid parameter 'bogus'"},
		{in: "fd=abc,bogus=1", err: "Parameter 'fd' expects a number"},
		{in: "bogus=1,fd=abc", err: "Invalid parameter 'bogus'"},
		{in: "fd=3,set=1,fd=abc", err: "Parameter 'fd' expects a number"},
		{in: "fd=3,,set=1", err: "Parameter 'fd' expects a number"},
		{in: "fd=3,set=1,,", err: "Parameter 'set' expects a number"},
		{in: "fd=3 ,set=1", err: "Parameter 'fd' expects a number"},
		{in: "fd", err: "Parameter 'fd' expects a number"},
		{in: "3", err: "Invalid parameter '3'"},
		{in: ",fd=3,set=1", err: "Invalid parameter ''"},
		{in: "fd=3,set=1,FD=3", err: "Invalid parameter 'FD'"},
		{in: "fd=99999999999999999999,set=1", err: "Value '99999999999999999999' is too large for parameter 'fd'"},
		{in: "fd=3,set=99999999999999999999", err: "Value '99999999999999999999' is too large for parameter 'set'"},
		{in: "fd=3,set=1,id=1x", err: "Parameter 'id' expects an identifier"},
		{in: "", err: "fd option is required and must be non-negative"},
		{in: "set=1", err: "fd option is required and must be non-negative"},
		{in: "fd=-1,set=1", err: "fd option is required and must be non-negative"},
		{in: "fd=2147483651,set=1", err: "fd is not valid or already in use"}, // QEMU: negative after its int cast
		{in: "fd=4294967299,set=1", err: "fd is not valid or already in use"}, // QEMU truncates this to 3
		{in: "fd=1,set=1", err: "fd cannot be a standard I/O stream"},
		{in: "fd=0", err: "fd cannot be a standard I/O stream"},
		{in: fmt.Sprintf("fd=%d,set=1", closed), err: "fd is not valid or already in use"},
		{in: fmt.Sprintf("fd=%d,set=1", cloexec.Fd()), err: "fd is not valid or already in use"},
		{in: fmt.Sprintf("fd=%d", closed), err: "fd is not valid or already in use"},
		{in: fmt.Sprintf("fd=%d", fd), err: "set option is required and must be non-negative"},
		{in: fmt.Sprintf("fd=%d,set=-1", fd), err: "set option is required and must be non-negative"},
		{in: fmt.Sprintf("fd=%d,set=9223372036854775808", fd), err: "set option is required and must be non-negative"},
		{in: fmt.Sprintf("fd=%d,set=abc", fd), err: "Parameter 'set' expects a number"},
	} {
		got, err := ParseAddFd(tc.in)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseAddFd(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if got.Fd != tc.want.Fd || got.Set != tc.want.Set || (got.Opaque == nil) != (tc.want.Opaque == nil) ||
			got.Opaque != nil && *got.Opaque != *tc.want.Opaque {
			t.Errorf("ParseAddFd(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if _, err := ParseAddFd("fd=1,set=1"); !errors.Is(err, ErrFdStdio) {
		t.Errorf("error %v does not match ErrFdStdio", err)
	}
}
