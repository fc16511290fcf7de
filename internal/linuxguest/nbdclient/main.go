// Command nbdclient is a minimal client for the Linux kernel's nbd driver,
// built statically for the test guest (busybox has no nbd-client applet,
// and Debian's nbd-client needs its shared libraries in the initramfs).
// It does the fixed newstyle handshake (NBD_OPT_GO) in user space and
// hands the socket to the kernel, which does every read and write; it was
// written from the NBD spec and shares no code with minivmm.
//
//	nbdclient [-ignore-ro] [-C N] HOST:PORT EXPORT /dev/nbdN   connect; returns at disconnect
//	nbdclient -d /dev/nbdN                                        disconnect
//
// With -C N it makes N connections, which the kernel uses one per hardware
// queue (it requires the export to offer NBD_FLAG_CAN_MULTI_CONN).
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// The nbd driver's ioctls (include/uapi/linux/nbd.h): _IO(0xab, n).
const (
	nbdSetSock    = 0xab00
	nbdSetBlksize = 0xab01
	nbdSetSize    = 0xab02
	nbdDoIt       = 0xab03
	nbdClearSock  = 0xab04
	nbdClearQue   = 0xab05
	nbdDisconnect = 0xab08
	nbdSetFlags   = 0xab0a
)

func main() {
	disconnect := flag.Bool("d", false, "disconnect the device")
	ignoreRO := flag.Bool("ignore-ro", false, "do not tell the kernel an export is read-only (so that writes reach the server)")
	conns := flag.Int("C", 1, "connections")
	flag.Parse()
	var err error
	switch {
	case *disconnect && flag.NArg() == 1:
		err = disconnectDev(flag.Arg(0))
	case !*disconnect && flag.NArg() == 3 && *conns >= 1:
		err = connect(flag.Arg(0), flag.Arg(1), flag.Arg(2), *ignoreRO, *conns)
	default:
		fmt.Fprintln(os.Stderr, "usage: nbdclient [-ignore-ro] [-C N] HOST:PORT EXPORT /dev/nbdN | nbdclient -d /dev/nbdN")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nbdclient:", err)
		os.Exit(1)
	}
}

// dial connects to the export and runs the handshake.
func dial(addr, name string) (*os.File, export, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, export{}, err
	}
	// File dups the socket into a blocking fd of our own, which the
	// kernel takes a reference to; the net.Conn is closed at once.
	sock, err := c.(*net.TCPConn).File()
	c.Close()
	if err != nil {
		return nil, export{}, err
	}
	e, err := negotiate(sock, name)
	if err != nil {
		sock.Close()
		return nil, export{}, err
	}
	return sock, e, nil
}

func connect(addr, name, dev string, ignoreRO bool, conns int) error {
	// The kernel ties a device's set-up to the thread that began it
	// (NBD_SET_SOCK from another one is EBUSY).
	runtime.LockOSThread()
	d, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	var socks []*os.File
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	var e export
	for i := 0; i < conns; i++ {
		s, ei, err := dial(addr, name)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		socks = append(socks, s)
		if i > 0 && ei != e {
			return fmt.Errorf("connection %d: export %+v, the first was %+v", i, ei, e)
		}
		e = ei
	}
	flags := e.flags
	if ignoreRO {
		flags &^= transReadOnly
	}
	bs := blockSize(e)
	fd := int(d.Fd())
	type ioctl struct {
		name     string
		req, arg uint
	}
	steps := []ioctl{
		{"NBD_SET_BLKSIZE", nbdSetBlksize, uint(bs)},
		{"NBD_SET_SIZE", nbdSetSize, uint(e.size)},
		{"NBD_CLEAR_SOCK", nbdClearSock, 0},
		{"NBD_SET_FLAGS", nbdSetFlags, uint(flags)},
	}
	for _, s := range socks {
		steps = append(steps, ioctl{"NBD_SET_SOCK", nbdSetSock, uint(s.Fd())})
	}
	for _, s := range steps {
		if err := unix.IoctlSetInt(fd, s.req, int(s.arg)); err != nil {
			return fmt.Errorf("%s %s: %w", dev, s.name, err)
		}
	}
	fmt.Printf("nbdclient: %s on %s: size %d, flags %#x, block size %d (server: %d/%d/%d), %d connection(s)\n",
		name, dev, e.size, flags, bs, e.minBlock, e.prefBlock, e.max, conns)
	// NBD_DO_IT serves the device until it is disconnected or the
	// connection breaks. A signal interrupting it shuts the sockets down
	// and, the ioctl being restarted (SA_RESTART), ends in EBUSY: so this
	// thread blocks every signal it can first (the Go runtime's
	// preemption signal included; the others go to other threads).
	var all unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &all, nil); err != nil {
		return fmt.Errorf("blocking signals: %w", err)
	}
	doErr := unix.IoctlSetInt(fd, nbdDoIt, 0)
	unix.IoctlSetInt(fd, nbdClearQue, 0)
	unix.IoctlSetInt(fd, nbdClearSock, 0)
	if doErr != nil {
		return fmt.Errorf("%s NBD_DO_IT: %w", dev, doErr)
	}
	return nil
}

func disconnectDev(dev string) error {
	d, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.IoctlSetInt(int(d.Fd()), nbdDisconnect, 0); err != nil {
		return fmt.Errorf("%s NBD_DISCONNECT: %w", dev, err)
	}
	return nil
}
