package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"minivmm/qemuopen"
)

// pidfile is a written, locked -pidfile; the lock is held until Remove,
// so a second VMM given the same file fails instead of overwriting it.
type pidfile struct {
	path string
	fd   int
}

// writePidfile creates path (mode 0600), locks it and writes the pid, as
// QEMU's qemu_write_pidfile does, with its error texts.
func writePidfile(path string) (*pidfile, error) {
	for {
		fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, fmt.Errorf("Could not create '%s': %s", path, errText(err))
		}
		var b unix.Stat_t
		if err := unix.Fstat(fd, &b); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("Cannot stat file: %s", errText(err))
		}
		lock := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_SETLK, &lock); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("Cannot lock pid file: %s", errText(err))
		}
		// The file we locked must still be the one at path: another VMM
		// may have removed it between our open and our lock.
		var a unix.Stat_t
		if err := unix.Stat(path, &a); err != nil || a.Ino != b.Ino || a.Dev != b.Dev {
			unix.Close(fd)
			continue
		}
		pid := strconv.Itoa(os.Getpid()) + "\n"
		if err := unix.Ftruncate(fd, 0); err != nil {
			unix.Close(fd)
			os.Remove(path)
			return nil, fmt.Errorf("Failed to truncate pid file: %s", errText(err))
		}
		if n, err := unix.Write(fd, []byte(pid)); err != nil || n != len(pid) {
			unix.Close(fd)
			os.Remove(path)
			return nil, errors.New("Failed to write pid file")
		}
		return &pidfile{path: path, fd: fd}, nil
	}
}

// Remove deletes the file, then drops the lock.
func (p *pidfile) Remove() {
	os.Remove(p.path)
	unix.Close(p.fd)
}

func errText(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return qemuopen.Strerror(errno)
	}
	return err.Error()
}
