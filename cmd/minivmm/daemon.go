package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// -daemonize. Go cannot fork, so the parent runs itself again as a child
// in a new session, with the same arguments and inherited fds (-add-fd
// and fd= numbers stay valid: neither side has touched them yet). The
// child's stderr is a pipe the parent copies to its own; the child writes
// one byte on a second pipe once its monitors listen and the pidfile is
// written, then points its stderr at /dev/null. The parent exits 0 on
// that byte, or, if the pipe closes without it, with the child's exit
// status, having relayed the child's error: QEMU's behaviour.

// daemonEnv carries the ready pipe's fd number to the child.
const daemonEnv = "MINIVMM_DAEMON_READY_FD"

// daemonize is the parent's side; it returns the exit status.
func daemonize(args []string, stderr io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintf(stderr, "minivmm: cannot daemonize: %v\n", err)
		return 1
	}
	var ready [2]int
	if err := unix.Pipe2(ready[:], unix.O_CLOEXEC); err != nil {
		return fail(err)
	}
	readyR := os.NewFile(uintptr(ready[0]), "daemon-ready")
	defer readyR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		unix.Close(ready[1])
		return fail(err)
	}
	defer errR.Close()

	cmd := exec.Command("/proc/self/exe", args...)
	// The write end goes down at its own number (not as ExtraFiles, which
	// would take fd 3, perhaps an -add-fd one): clear its close-on-exec.
	cmd.Env = append(os.Environ(), daemonEnv+"="+strconv.Itoa(ready[1]))
	cmd.Stderr = errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	_, err = unix.FcntlInt(uintptr(ready[1]), unix.F_SETFD, 0)
	if err == nil {
		err = cmd.Start()
	}
	unix.Close(ready[1])
	errW.Close()
	if err != nil {
		return fail(err)
	}
	copied := make(chan struct{})
	go func() {
		io.Copy(stderr, errR)
		close(copied)
	}()
	var b [1]byte
	n, _ := readyR.Read(b[:])
	<-copied // the child's stderr is closed or /dev/null by now
	if n == 1 {
		cmd.Process.Release()
		return 0
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() > 0 {
		return exit.ExitCode()
	}
	return 1
}

// daemonChild is the child's side of the ready pipe, taken from the
// environment (nil when not daemonized).
type daemonChild struct{ fd int }

func daemonChildFromEnv() *daemonChild {
	v, ok := os.LookupEnv(daemonEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(daemonEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	unix.CloseOnExec(fd)
	return &daemonChild{fd: fd}
}

// ready tells the parent to exit 0 and detaches stderr from it.
func (d *daemonChild) ready() error {
	null, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(null)
	if err := unix.Dup2(null, 2); err != nil {
		return err
	}
	_, err = unix.Write(d.fd, []byte{'R'})
	unix.Close(d.fd)
	return err
}
