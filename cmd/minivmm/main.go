// Command minivmm is a small virtual machine monitor whose every open goes
// through QEMU-style fdsets, driven by QEMU's command line and QMP.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/cmdline"
	"minivmm/monitor"
	"minivmm/qemuopen"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// options are the VMM's command-line options, as QEMU spells them.
type options struct {
	set        *cmdline.FlagSet
	paused     *bool
	fdsetOnly  *bool
	autoclose  *[]string
	pidfile    *[]string
	defaultQMP bool
}

func newOptions() *options {
	fs := cmdline.NewFlagSet("minivmm")
	o := &options{set: fs}
	for _, name := range []string{"add-fd", "qmp", "chardev", "mon", "name", "machine", "M", "display", "blockdev", "drive"} {
		fs.StringArray(name, "")
	}
	o.pidfile = fs.StringArray("pidfile", "write the process id to FILE")
	o.autoclose = fs.StringArray("fdset-autoclose", "on (default): close a departed client's unused fds; off: QEMU 9.1's rule")
	o.paused = fs.Bool("S", "start paused (prelaunch)")
	o.fdsetOnly = fs.Bool("fdset-only", "refuse to open any path but /dev/fdset/N")
	fs.Bool("nodefaults", "accepted for libvirt; minivmm creates no default devices")
	return o
}

// vmm is what one run of the binary holds, for orderly teardown.
type vmm struct {
	stderr  io.Writer
	fds     *qemuopen.Registry
	graph   *block.Graph
	vm      *monitor.VM
	srv     *monitor.Server
	pidfile string
}

func run(args []string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "io" {
		return runIO(args[1:], os.Stdin, os.Stdout, stderr)
	}
	if len(args) > 0 && args[0] == "img" {
		return runImg(args[1:], os.Stdout, stderr)
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "minivmm: %v\n", err)
		// QEMU prints a hint (error_append_hint) on a line of its own.
		var h interface{ Hint() string }
		if errors.As(err, &h) {
			fmt.Fprintln(stderr, h.Hint())
		}
		return 1
	}
	o := newOptions()
	if err := o.set.Parse(args); err != nil {
		return fail(err)
	}
	occ := o.set.Occurrences()

	keepUnused := false
	if n := len(*o.autoclose); n > 0 {
		v := (*o.autoclose)[n-1]
		on, err := cmdline.ParseBool(v)
		if err != nil {
			return fail(&cmdline.OptionError{Option: "fdset-autoclose", Value: v, Err: err})
		}
		keepUnused = !on
	}
	v := &vmm{stderr: stderr, fds: qemuopen.New(qemuopen.Config{FdsetOnly: *o.fdsetOnly, KeepUnused: keepUnused})}
	defer v.fds.CloseAll()

	// QEMU checks the simple options first and in order; so do we.
	for _, oc := range occ {
		var err error
		switch oc.Name {
		case "name":
			_, err = cmdline.ParseName(oc.Value)
		case "machine", "M":
			err = cmdline.ParseMachine(oc.Value)
		case "display":
			err = cmdline.ParseDisplay(oc.Value)
		}
		if err != nil {
			return fail(oc.Wrap(err))
		}
	}
	if err := v.addFds(occ); err != nil {
		return fail(err)
	}

	v.graph = block.NewGraph(v.fds)
	defer v.graph.Close()
	if err := v.addBlockdevs(occ); err != nil {
		return fail(err)
	}

	// The pidfile is written before any monitor socket exists, as QEMU
	// does: a manager that sees the socket may rely on the pidfile.
	if n := len(*o.pidfile); n > 0 {
		v.pidfile = (*o.pidfile)[n-1]
		if err := os.WriteFile(v.pidfile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
			return fail(fmt.Errorf("cannot create PID file: %w", err))
		}
		defer os.Remove(v.pidfile)
	}

	v.vm = monitor.NewVM(*o.paused)
	v.srv = monitor.NewServer(v.fds, v.graph, v.vm)
	defer v.srv.Close()
	// Signals are caught before any socket exists: a client that has
	// connected may rely on SIGTERM being a clean shutdown (SHUTDOWN
	// event, sockets removed), not Go's default exit.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	go func() {
		if sig, ok := <-sigs; ok {
			fmt.Fprintf(stderr, "minivmm: terminating on signal %d\n", sig.(syscall.Signal))
			v.vm.Shutdown("host-signal")
			v.vm.RequestExit()
		}
	}()
	waits, err := v.startMonitors(occ)
	if err != nil {
		return fail(err)
	}

	for _, m := range waits {
		fmt.Fprintf(stderr, "minivmm: waiting for connection on %s\n", m.Addr())
		select {
		case <-m.Connected():
		case <-v.vm.ExitRequested():
		}
	}
	<-v.vm.ExitRequested()
	return 0
}

// addFds handles every -add-fd in order: each fd is checked as QEMU checks
// it and duplicated into its set; the originals are closed only after all
// are parsed, so one fd may be named by several options.
func (v *vmm) addFds(occ []cmdline.Occurrence) error {
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
		a, err := cmdline.ParseAddFd(oc.Value)
		if err != nil {
			return oc.Wrap(err)
		}
		dup, err := unix.FcntlInt(uintptr(a.Fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return oc.Wrap(fmt.Errorf("Failed to dup() fd %d: %w", a.Fd, err))
		}
		set := a.Set
		if _, _, err := v.fds.AddFd(dup, qemuopen.AddRequest{SetID: &set, Opaque: a.Opaque, Owner: qemuopen.CommandLine}); err != nil {
			return oc.Wrap(err)
		}
		originals = appendOnce(originals, a.Fd)
	}
	return nil
}

func appendOnce(list []int, fd int) []int {
	for _, have := range list {
		if have == fd {
			return list
		}
	}
	return append(list, fd)
}

// startMonitors starts every -qmp and -mon, in order; with neither, one on
// a default socket that it prints. It returns the monitors that asked to
// wait for a first client (server=on without wait=off).
func (v *vmm) startMonitors(occ []cmdline.Occurrence) ([]*monitor.Monitor, error) {
	chardevs := map[string]cmdline.Chardev{}
	var waits []*monitor.Monitor
	start := func(oc cmdline.Occurrence, cd cmdline.Chardev, pretty bool) error {
		var m *monitor.Monitor
		var err error
		if cd.Fd >= 0 {
			m, err = v.srv.ListenFd(cd.Fd, pretty)
		} else {
			m, err = v.srv.Listen(cd.Path, pretty)
		}
		if err != nil {
			return err
		}
		if cd.Wait {
			waits = append(waits, m)
		}
		return nil
	}
	monitors := 0
	for _, oc := range occ {
		switch oc.Name {
		case "chardev":
			cd, err := cmdline.ParseChardev(oc.Value)
			if err != nil {
				return nil, oc.Wrap(err)
			}
			if _, dup := chardevs[cd.ID]; dup {
				return nil, oc.Wrap(fmt.Errorf("Duplicate ID '%s' for chardev", cd.ID))
			}
			chardevs[cd.ID] = cd
		case "qmp":
			cd, err := cmdline.ParseQmp(oc.Value)
			if err == nil {
				err = start(oc, cd, false)
			}
			if err != nil {
				return nil, oc.Wrap(err)
			}
			monitors++
		case "mon":
			mon, err := cmdline.ParseMon(oc.Value)
			if err != nil {
				return nil, oc.Wrap(err)
			}
			cd, ok := chardevs[mon.Chardev]
			if !ok {
				return nil, oc.Wrap(fmt.Errorf("chardev \"%s\" not found", mon.Chardev))
			}
			delete(chardevs, mon.Chardev) // one monitor per chardev
			if err := start(oc, cd, mon.Pretty); err != nil {
				return nil, oc.Wrap(err)
			}
			monitors++
		}
	}
	if monitors == 0 {
		path := defaultSocket()
		if _, err := v.srv.Listen(path, false); err != nil {
			return nil, err
		}
		fmt.Fprintf(v.stderr, "minivmm: QMP monitor listening on %s\nminivmm: try: socat - UNIX-CONNECT:%s\n", path, path)
	}
	return waits, nil
}

// defaultSocket is where a VMM started without monitors listens: the
// user's runtime directory if there is one, else the temp directory.
func defaultSocket() string {
	dir := os.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "minivmm-"+strconv.Itoa(os.Getpid())+".qmp")
}
