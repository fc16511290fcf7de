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
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/block/objects"
	"minivmm/cmdline"
	"minivmm/internal/imgtool"
	"minivmm/internal/iotool"
	"minivmm/internal/qtool"
	"minivmm/monitor"
	"minivmm/qemuopen"
	"minivmm/vm/machine"
)

func main() {
	// Run as qemu-img or qemu-io (a link of that name to this binary),
	// minivmm is that tool, named as run, so that scripts written for
	// QEMU's tools run unchanged, messages included.
	switch name := filepath.Base(os.Args[0]); name {
	case "qemu-img":
		os.Exit(imgtool.Run(qtool.Program{Name: name, Version: monitor.MinivmmVersion}, os.Args[1:], os.Stdout, os.Stderr))
	case "qemu-io":
		os.Exit(iotool.Run(qtool.Program{Name: name, Version: monitor.MinivmmVersion}, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the VMM's command-line options, as QEMU spells them. Each
// is registered with its help text (a `word` in it names the argument);
// usage.go prints them.
type options struct {
	set        *cmdline.FlagSet
	help       *bool
	helpLong   *bool
	version    *bool
	paused     *bool
	fdsetOnly  *bool
	daemonize  *bool
	autoclose  *[]string
	pidfile    *[]string
	logfile    *[]string
	mem        *[]string
	workloads  *[]string
	defaultQMP bool
}

func newOptions() *options {
	fs := cmdline.NewFlagSet("minivmm")
	fs.PFlags().SortFlags = false // -h lists them in this order
	o := &options{set: fs}
	for _, opt := range []struct {
		name, arg, help string
		flag            **bool     // where an option without an argument is read, if here
		values          **[]string // where the values of one with an argument are, if here
	}{
		{"h", "", "display this help and exit", &o.help, nil},
		{"help", "", "display this help and exit", &o.helpLong, nil},
		{"version", "", "display version information and exit", &o.version, nil},
		{"name", "string1[,process=string2][,debug-threads=on|off]", "set the guest's name (query-name, info name)", nil, nil},
		{"machine", "[type=]none", "select the machine: minivmm has one, 'none'", nil, nil},
		{"M", "none", "same as -machine", nil, nil},
		{"display", "none", "select the display: minivmm has none", nil, nil},
		{"nodefaults", "", "accepted for libvirt; minivmm creates no default devices", nil, nil},
		{"S", "", "start paused (prelaunch); 'cont' runs", &o.paused, nil},
		{"add-fd", "fd=fd,set=set[,opaque=opaque]", "put a duplicate of inherited file descriptor 'fd' into fd set 'set'", nil, nil},
		{"fdset-only", "", "refuse to open any path but /dev/fdset/N", &o.fdsetOnly, nil},
		{"fdset-autoclose", "on|off", "on (default): close a departed client's unused fds; off: QEMU 9.1's rule", nil, &o.autoclose},
		{"object", "tls-creds-x509,id=id,dir=d[,endpoint=server|client][,verify-peer=on|off][,priority=p][,sanity-check=on|off] or secret,id=id,data=s|file=f", "create an object: TLS credentials for the NBD server and client", nil, nil},
		{"blockdev", "driver=d,node-name=n[,...]", "add a block node (raw, qcow2, file, null-co); JSON works too", nil, nil},
		{"drive", "file=f[,format=raw|qcow2][,id=id][,...]", "add a block backend and its nodes", nil, nil},
		{"export", "[type=]vhost-user-blk,id=id,node-name=n,addr.type=unix,addr.path=p[,writable=on][,num-queues=n][,logical-block-size=s] or [type=]nbd,id=id,node-name=n[,name=s][,description=s][,writable=on][,allocation-depth=on]", "serve a block node to vhost-user-blk front ends or on the NBD server (as qemu-storage-daemon --export)", nil, nil},
		{"nbd-server", "addr.type=unix,addr.path=p|addr.type=inet,addr.host=h,addr.port=n[,max-connections=n][,tls-creds=id]", "start the NBD server (as qemu-storage-daemon --nbd-server)", nil, nil},
		{"m", "[size=]megs", "set the guest memory size (a memfd; MiB without a suffix; default 128M)", nil, &o.mem},
		{"device", "virtio-blk-pci,drive=id[,id=id][,num-queues=n][,queue-size=n][,serial=s]", "add a virtio-blk device on a -drive or -blockdev, driven by the built-in guest", nil, nil},
		{"workload", "rw=rw[,bs=b][,iodepth=n][,numjobs=n][,size=s][,runtime=t][,rwmixread=p][,verify=on]", "run the built-in guest's fio-like workload on the devices once started; results on stdout and as X_WORKLOAD_COMPLETED", nil, &o.workloads},
		{"chardev", "socket,id=id,path=path,server=on[,wait=off]", "define a character device for -mon; also socket,id=id,fd=n,server=on and stdio,id=id", nil, nil},
		{"mon", "[chardev=]name[,mode=readline|control][,pretty[=on|off]]", "run a monitor on a chardev (readline: HMP; control: QMP)", nil, nil},
		{"qmp", "dev", "run a QMP monitor on 'dev': unix:path,server=on[,wait=off], stdio or chardev:id", nil, nil},
		{"monitor", "dev", "run a human (HMP) monitor on 'dev': stdio, unix:path,server=on[,wait=off], chardev:id or none", nil, nil},
		{"pidfile", "file", "write the process id to 'file', locked while minivmm runs", nil, &o.pidfile},
		{"daemonize", "", "detach once the monitors listen and the pidfile is written", &o.daemonize, nil},
		{"D", "logfile", "write minivmm's messages to 'logfile' once it has started (default stderr)", nil, &o.logfile},
		{"msg", "[timestamp[=on|off]][,guest-name=[on|off]]", "control the message format (timestamp=on: prefix the UTC time)", nil, nil},
	} {
		if opt.arg == "" {
			b := fs.Bool(opt.name, opt.help)
			if opt.flag != nil {
				*opt.flag = b
			}
			continue
		}
		values := fs.StringArray(opt.name, opt.help)
		fs.PFlags().SetAnnotation(opt.name, argAnnotation, []string{opt.arg})
		if opt.values != nil {
			*opt.values = values
		}
	}
	return o
}

// argAnnotation holds, on each option that takes an argument, the
// argument's shape as -h shows it.
const argAnnotation = "minivmm-arg"

// vmm is what one run of the binary holds, for orderly teardown.
type vmm struct {
	stderr  io.Writer
	rep     *reporter
	fds     *qemuopen.Registry
	graph   *block.Graph
	machine *machine.Machine
	// virtioDrives are the -drive if=virtio backends, each to get a device.
	virtioDrives []string
	vm           *monitor.VM
	srv          *monitor.Server
	hmps         []*monitor.HMPMonitor
	pidfile      *pidfile
}

// waiter is a monitor that may be asked to wait for its first client.
type waiter interface {
	Addr() string
	Connected() <-chan struct{}
}

func run(args []string, stdout, stderr io.Writer) (code int) {
	if len(args) > 0 && args[0] == "io" {
		return runIO(args[1:], os.Stdin, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "img" {
		return runImg(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "run" {
		return runRun(args[1:], stdout, stderr)
	}
	rep := &reporter{w: stderr, now: time.Now}
	fail := func(err error) int {
		rep.Printf("%v", err)
		// QEMU prints a hint (error_append_hint) on a line of its own.
		var h interface{ Hint() string }
		if errors.As(err, &h) {
			rep.Println(h.Hint())
		}
		return 1
	}
	o := newOptions()
	if err := o.set.Parse(args); err != nil {
		return fail(err)
	}
	if *o.help || *o.helpLong {
		printUsage(stdout, o.set)
		return 0
	}
	if *o.version {
		printVersion(stdout)
		return 0
	}
	occ := o.set.Occurrences()

	// -msg and -name first: they shape every message after them.
	guestName, withGuestName := "", false
	for _, oc := range occ {
		switch oc.Name {
		case "msg":
			m, err := cmdline.ParseMsg(oc.Value)
			if err != nil {
				return fail(oc.Wrap(err))
			}
			rep.timestamp, withGuestName = m.Timestamp, m.GuestName
		case "name":
			name, err := cmdline.ParseName(oc.Value)
			if err != nil {
				return fail(oc.Wrap(err))
			}
			guestName = name
		}
	}
	if withGuestName {
		rep.guest = guestName
	}

	child := daemonChildFromEnv()
	if *o.daemonize && child == nil {
		for _, oc := range occ {
			if usesStdio(oc) {
				return fail(oc.Wrap(errors.New("cannot use stdio with -daemonize")))
			}
		}
		return daemonize(args, stderr)
	}

	keepUnused := false
	if n := len(*o.autoclose); n > 0 {
		v := (*o.autoclose)[n-1]
		on, err := cmdline.ParseBool(v)
		if err != nil {
			return fail(&cmdline.OptionError{Option: "fdset-autoclose", Value: v, Err: err})
		}
		keepUnused = !on
	}
	v := &vmm{stderr: stderr, rep: rep, fds: qemuopen.New(qemuopen.Config{FdsetOnly: *o.fdsetOnly, KeepUnused: keepUnused})}
	defer v.fds.CloseAll()

	// QEMU checks the simple options first and in order; so do we.
	for _, oc := range occ {
		var err error
		switch oc.Name {
		case "machine", "M":
			err = cmdline.ParseMachine(oc.Value)
		case "display":
			err = cmdline.ParseDisplay(oc.Value)
		}
		if err != nil {
			return fail(oc.Wrap(err))
		}
	}
	var logFile *os.File
	if n := len(*o.logfile); n > 0 {
		path := (*o.logfile)[n-1]
		flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		if child != nil { // QEMU appends when daemonized
			flags = os.O_WRONLY | os.O_CREATE | os.O_APPEND
		}
		f, err := os.OpenFile(path, flags, 0o644)
		if err != nil {
			return fail(fmt.Errorf("Error opening logfile %s: %s", path, errText(err)))
		}
		logFile = f
		defer f.Close()
	}
	if err := cmdline.AddFds(v.fds, occ); err != nil {
		return fail(err)
	}

	v.graph = block.NewGraph(v.fds)
	v.graph.SetObjects(objects.NewRegistry())
	if err := cmdline.AddObjects(v.graph.Objects(), occ); err != nil {
		return fail(err)
	}
	defer func() {
		if closeGraph(v.graph, rep) != 0 {
			code = 1
		}
	}()
	if err := v.addBlockdevs(occ); err != nil {
		return fail(err)
	}
	exports, err := addExports(v.graph, occ, rep)
	if err != nil {
		return fail(err)
	}
	defer exports.Close() // before the graph closes: the exports use its nodes
	specs, err := v.startMachine(occ, *o.paused)
	if err != nil {
		return fail(err)
	}
	if v.machine != nil {
		defer v.machine.Close() // before the graph closes: the devices let their drives go
	}

	// The pidfile is written before any monitor socket exists, as QEMU
	// does: a manager that sees the socket may rely on the pidfile.
	if n := len(*o.pidfile); n > 0 {
		pf, err := writePidfile((*o.pidfile)[n-1])
		if err != nil {
			return fail(fmt.Errorf("cannot create PID file: %w", err))
		}
		v.pidfile = pf
		defer pf.Remove()
	}

	v.vm = monitor.NewVM(*o.paused)
	v.vm.SetName(guestName)
	v.srv = monitor.NewServer(v.fds, v.graph, v.vm)
	v.srv.SetExports(exports.Table, exports.nbd)
	defer v.srv.Close()
	v.connectMachine()
	defer func() {
		for _, m := range v.hmps {
			m.Close()
		}
	}()
	// Signals are caught before any socket exists: a client that has
	// connected may rely on SIGTERM being a clean shutdown (SHUTDOWN
	// event, sockets removed), not Go's default exit.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	// As QEMU: a reader of stdout or stderr that goes away (a stdio
	// monitor piped into head) makes writes fail, it does not end the VM.
	signal.Ignore(syscall.SIGPIPE)
	defer signal.Stop(sigs)
	go func() {
		if sig, ok := <-sigs; ok {
			rep.Printf("terminating on signal %d", sig.(syscall.Signal))
			v.vm.Shutdown("host-signal")
			v.vm.RequestExit()
		}
	}()
	waits, err := v.startMonitors(occ)
	if err != nil {
		return fail(err)
	}

	for _, m := range waits {
		rep.Printf("waiting for connection on %s", m.Addr())
		select {
		case <-m.Connected():
		case <-v.vm.ExitRequested():
		}
	}
	// Started: from here on, messages go to the -D log, and a daemon's
	// parent may exit.
	if logFile != nil {
		rep.setWriter(logFile)
	}
	if child != nil {
		if err := child.ready(); err != nil {
			return fail(fmt.Errorf("cannot daemonize: %w", err))
		}
	}
	workloadsDone := v.runWorkloads(specs, stdout, !stdioTaken(occ))
	defer func() { <-workloadsDone }()
	<-v.vm.ExitRequested()
	return 0
}

// usesStdio tells whether an option puts a chardev on stdin/stdout.
func usesStdio(oc cmdline.Occurrence) bool {
	switch oc.Name {
	case "monitor":
		cd, err := cmdline.ParseMonitor(oc.Value)
		return err == nil && cd.Backend == "stdio"
	case "qmp":
		cd, err := cmdline.ParseQmp(oc.Value)
		return err == nil && cd.Backend == "stdio"
	case "chardev":
		cd, err := cmdline.ParseChardev(oc.Value)
		return err == nil && cd.Backend == "stdio"
	}
	return false
}

// startMonitors starts every -qmp, -monitor and -mon, in order; with
// none, a QMP monitor on a default socket that it prints. As in QEMU, all
// -chardev are made before any monitor, so a monitor may name one given
// after it, and a chardev serves one monitor. It returns the monitors
// that asked to wait for a first client (server=on without wait=off).
func (v *vmm) startMonitors(occ []cmdline.Occurrence) ([]waiter, error) {
	chardevs := map[string]cmdline.Chardev{}
	for _, oc := range occ {
		if oc.Name != "chardev" {
			continue
		}
		cd, err := cmdline.ParseChardev(oc.Value)
		if _, dup := chardevs[cd.ID]; err == nil && dup {
			err = fmt.Errorf("Duplicate ID '%s' for chardev", cd.ID)
		}
		if err != nil {
			return nil, oc.Wrap(err)
		}
		chardevs[cd.ID] = cd
	}
	inUse := map[string]bool{}  // chardevs a monitor took
	monIDs := map[string]bool{} // -mon id=, -qmp/-monitor chardev:ID
	var waits []waiter
	stdioUsed, stdioMode, stdioPretty := false, "", false
	// onChardev notes the id of a monitor on a -chardev (QEMU's -mon id=,
	// or the ID of chardev:ID) and finds the chardev.
	onChardev := func(id, chardev string) (cmdline.Chardev, error) {
		if id != "" && monIDs[id] {
			return cmdline.Chardev{}, fmt.Errorf("Duplicate ID '%s' for mon", id)
		}
		monIDs[id] = true
		cd, ok := chardevs[chardev]
		if !ok {
			return cmdline.Chardev{}, fmt.Errorf("chardev \"%s\" not found", chardev)
		}
		return cd, nil
	}
	start := func(cd cmdline.Chardev, mode string, pretty bool) error {
		if cd.ID != "" {
			if inUse[cd.ID] {
				return fmt.Errorf("Device '%s' is in use", cd.ID)
			}
			inUse[cd.ID] = true
		}
		var w waiter
		var err error
		switch {
		case cd.Backend == "none":
			return nil
		case cd.Backend == "stdio" && stdioUsed:
			return errors.New("cannot use stdio by multiple character devices")
		case cd.Backend == "stdio":
			// Started once every monitor is: a bad option after it
			// must fail before anything is written to stdout.
			stdioUsed, stdioMode, stdioPretty = true, mode, pretty
			return nil
		case mode == "readline" && cd.Fd >= 0:
			var m *monitor.HMPMonitor
			m, err = v.srv.ListenHMPFd(cd.Fd)
			if err == nil {
				v.hmps, w = append(v.hmps, m), m
			}
		case mode == "readline":
			var m *monitor.HMPMonitor
			m, err = v.srv.ListenHMP(cd.Path)
			if err == nil {
				v.hmps, w = append(v.hmps, m), m
			}
		case cd.Fd >= 0:
			w, err = v.srv.ListenFd(cd.Fd, pretty)
		default:
			w, err = v.srv.Listen(cd.Path, pretty)
		}
		if err != nil {
			return err
		}
		if cd.Wait {
			waits = append(waits, w)
		}
		return nil
	}
	monitors := 0
	for _, oc := range occ {
		var err error
		switch oc.Name {
		case "qmp":
			var cd cmdline.Chardev
			if cd, err = cmdline.ParseQmp(oc.Value); err == nil && cd.Backend == "chardev" {
				cd, err = onChardev(cd.ID, cd.ID)
			}
			if err == nil {
				err = start(cd, "control", false)
			}
			monitors++
		case "monitor":
			var cd cmdline.Chardev
			if cd, err = cmdline.ParseMonitor(oc.Value); err == nil && cd.Backend == "chardev" {
				cd, err = onChardev(cd.ID, cd.ID)
			}
			if err == nil {
				err = start(cd, "readline", false)
			}
			monitors++
		case "mon":
			var mon cmdline.Mon
			if mon, err = cmdline.ParseMon(oc.Value); err != nil {
				break
			}
			var cd cmdline.Chardev
			if cd, err = onChardev(mon.ID, mon.Chardev); err == nil {
				err = start(cd, mon.Mode, mon.Pretty)
			}
			monitors++
		}
		if err != nil {
			return nil, oc.Wrap(err)
		}
	}
	switch {
	case stdioUsed && stdioMode == "control":
		if _, err := v.srv.ServeStdio(os.Stdin, os.Stdout, stdioPretty); err != nil {
			return nil, err
		}
	case stdioUsed:
		v.hmps = append(v.hmps, v.srv.ServeHMP(os.Stdin, os.Stdout, !isTTY(os.Stdin)))
	}
	if monitors == 0 {
		path := defaultSocket()
		if _, err := v.srv.Listen(path, false); err != nil {
			return nil, err
		}
		v.rep.Printf("QMP monitor listening on %s", path)
		v.rep.Printf("try: socat - UNIX-CONNECT:%s (or start minivmm with -monitor stdio)", path)
	}
	return waits, nil
}

// isTTY tells whether f is a terminal, which echoes typed lines itself.
func isTTY(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
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
