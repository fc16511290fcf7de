// Package runtool is `minivmm run`: the product's job on embedded
// defaults. It acts as a management layer would: it makes (or takes)
// images, opens each as an O_RDONLY/O_RDWR pair, starts a second minivmm
// with them as -add-fd, attaches them over QMP as virtio-blk devices,
// runs the built-in guest's verifying workload with a progress line and,
// while it runs, takes a live snapshot and commits it back (an
// intermediate commit, then an active commit that pivots the device),
// printing each reopen with its time and the fds the VMM holds after
// each step; then it reads everything back with verify on, unplugs,
// and checks the images. It exits 0 only if every check held.
package runtool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"minivmm/internal/qmpclient"
	"minivmm/vm/workload"
)

// Config is how the tool runs.
type Config struct {
	// Self is the minivmm binary to start as the VMM (and as img).
	Self   string
	Stdout io.Writer
	Stderr io.Writer
	// Progress: a terminal gets its progress line rewritten in place.
	TTY bool
	// BeforeReadBack, if set, is called with each device's active
	// image once the workload and the live operations are done and
	// before verify reads everything back (tests break an image here
	// to see the run fail).
	BeforeReadBack func(path string) error
}

// Defaults for the workload: a mixed verifying workload on the images
// the tool makes, a read-only verifying pass on a user's images; and the
// read-back after it, over every device whole.
const (
	defaultWrite = "rw=randrw,bs=4k,iodepth=32,numjobs=2,rwmixread=50,verify=on"
	defaultRead  = "rw=randread,bs=4k,iodepth=32,numjobs=2,verify=on"
	readBack     = "rw=read,bs=64k,iodepth=16,numjobs=1,verify=on"
)

// Run is the command: it returns the exit status.
func Run(args []string, cfg Config) int {
	fs := pflag.NewFlagSet("minivmm run", pflag.ContinueOnError)
	fs.SetOutput(cfg.Stderr)
	var o options
	fs.BoolVar(&o.write, "write", false, "let the workload write to the images given (default: a read-only verify pass)")
	fs.BoolVar(&o.commit, "commit", false, "with --write: also snapshot each image given live and commit the snapshot back into it (its chain ends as it was)")
	fs.StringVar(&o.spec, "workload", "", "the workload, in -workload's syntax (default: "+defaultWrite+" on the images run makes)")
	fs.DurationVar(&o.runtime, "runtime", 5*time.Second, "how long the workload runs")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	fs.Usage = func() {
		fmt.Fprintf(cfg.Stderr, "usage: minivmm run [--write [--commit]] [--workload SPEC] [--runtime D] [IMAGE...]\n\n"+
			"Without IMAGE, makes a qcow2 image over a raw base in a temporary directory,\n"+
			"snapshots it live and commits the snapshot back while the workload runs.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 1
	}
	r := &runner{cfg: cfg, membersHeld: -1}
	r.fdsOK.Store(true)
	ok, err := r.run(fs.Args(), o)
	if err != nil {
		fmt.Fprintf(cfg.Stderr, "minivmm run: %v\n", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

type options struct {
	write, commit, keep bool
	spec                string
	runtime             time.Duration
}

type runner struct {
	cfg    Config
	mu     sync.Mutex // orders output lines from the live operations and the rest
	files  []*os.File
	chains []*chain
	sets   int

	pid         int
	t0          time.Time
	members     map[int]bool // the fdset members, as query-fdsets names them
	membersHeld int          // how many of them the VMM should hold (-1: not known yet)
	fdsOK       atomic.Bool
}

func (r *runner) printf(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cfg.TTY {
		fmt.Fprint(r.cfg.Stderr, "\r\033[K")
	}
	fmt.Fprintf(r.cfg.Stdout, format, a...)
}

// lockedWriter is the VMM's stderr: its lines go out between the tool's.
type lockedWriter struct{ r *runner }

func (w lockedWriter) Write(p []byte) (int, error) {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	return w.r.cfg.Stderr.Write(p)
}

func verdict(b bool) string {
	if b {
		return "ok"
	}
	return "FAILED"
}

func (r *runner) run(paths []string, o options) (ok bool, err error) {
	dir, err := os.MkdirTemp("", "minivmm-run-")
	if err != nil {
		return false, err
	}
	if o.keep {
		r.printf("keeping %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	defer func() {
		for _, f := range r.files {
			f.Close()
		}
	}()
	made := len(paths) == 0
	switch {
	case o.commit && !o.write && !made:
		return false, errors.New("--commit writes to your images: give --write too")
	case made:
		o.write = true
		err = r.makeImages(dir)
	default:
		err = r.probeImages(paths, dir, o.commit)
	}
	if err != nil {
		return false, err
	}
	if o.spec == "" {
		o.spec = defaultRead
		if o.write {
			o.spec = defaultWrite
		}
	}
	spec, err := workload.Parse(o.spec)
	if err != nil {
		return false, err
	}
	if spec.Runtime == 0 {
		spec.Runtime = o.runtime
	}
	if spec.Writes() && !o.write {
		return false, errors.New("the workload writes: give --write to let it write to your images")
	}
	for _, img := range r.allImages() {
		if err := r.openPair(img); err != nil {
			return false, err
		}
	}

	vmm, c, err := r.startVMM(dir, made)
	if err != nil {
		return false, err
	}
	defer func() {
		if vmm.ProcessState == nil {
			vmm.Process.Kill()
			vmm.Wait()
		}
	}()
	defer c.Close()
	r.pid = vmm.Process.Pid
	if r.members, err = fdsetMembers(c); err != nil {
		return false, err
	}
	r.membersHeld = len(r.files)
	r.printf("VMM pid %d: %d fds passed as -add-fd, an O_RDONLY and an O_RDWR one per image in %d fdsets\n", r.pid, len(r.files), r.sets)
	r.printf("%8s  %s\n", "time", "step, and the fds the VMM opened on the images (from /proc/PID/fdinfo), besides the fdsets")
	r.phase("VMM started")

	var devices []string
	var size int64
	for _, ch := range r.chains {
		if err := r.blockdevAdd(c, ch.top, o.write, !o.write); err != nil {
			return false, err
		}
		n, err := virtualSize(c, ch.top.node)
		if err != nil {
			return false, err
		}
		size += n
		ch.device = fmt.Sprintf("vd%d", len(devices))
		if _, err := c.Execute("device_add", map[string]any{"driver": "virtio-blk-pci", "id": ch.device, "drive": ch.top.node, "num-queues": 2}); err != nil {
			return false, fmt.Errorf("device_add %s: %w", ch.device, err)
		}
		devices = append(devices, ch.device)
		mode := "read-only"
		if o.write {
			mode = "read-write"
		}
		r.phase(fmt.Sprintf("attached %s (%s, %s) as virtio-blk %s", ch.top.name(), ch.top.format, mode, ch.device))
	}
	r.printf("workload: %s\n", spec)

	c.OnEvent = func(e qmpclient.Event) {
		if e.Name != "X_WORKLOAD_PROGRESS" {
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.cfg.TTY {
			fmt.Fprintf(r.cfg.Stderr, "\r\033[K%s", e.Str("line"))
		} else {
			fmt.Fprintln(r.cfg.Stderr, e.Str("line"))
		}
	}
	var running atomic.Bool
	running.Store(true)
	liveDone := make(chan error, 1)
	live := o.write && r.chains[0].snap != nil
	if live {
		go func() { liveDone <- r.live(sock(dir), spec.Runtime/10, running.Load) }()
	} else {
		liveDone <- nil
	}
	res, err := c.Execute("x-workload", map[string]any{"spec": spec.String(), "progress": true})
	running.Store(false)
	if r.cfg.TTY {
		r.mu.Lock()
		fmt.Fprintln(r.cfg.Stderr)
		r.mu.Unlock()
	}
	liveErr := <-liveDone
	if err != nil {
		return false, fmt.Errorf("x-workload: %w", err)
	}
	result, _ := res.(map[string]any)
	workloadOK := r.report(result)
	if liveErr != nil {
		r.printf("live operations: %v\n", liveErr)
	}

	readBackOK := true
	if o.write {
		if r.cfg.BeforeReadBack != nil {
			for _, ch := range r.chains {
				if err := r.cfg.BeforeReadBack(ch.active().path); err != nil {
					return false, err
				}
			}
		}
		r.printf("read back: %s\n", readBack)
		res, err := c.Execute("x-workload", map[string]any{"spec": readBack})
		if err != nil {
			return false, fmt.Errorf("x-workload: %w", err)
		}
		result, _ := res.(map[string]any)
		readBackOK = r.report(result)
		read, _ := result["read"].(map[string]any)
		if got := num(read["bytes"]); got != size {
			r.printf("  read back %d bytes of %d: FAILED\n", got, size)
			readBackOK = false
		}
	}

	for _, id := range devices {
		if _, err := c.Execute("device_del", map[string]any{"id": id}); err != nil {
			return false, fmt.Errorf("device_del %s: %w", id, err)
		}
		if _, err := c.EventFunc(30*time.Second, func(e qmpclient.Event) bool {
			return e.Name == "DEVICE_DELETED" && e.Str("device") == id
		}); err != nil {
			return false, err
		}
	}
	all := r.allImages()
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].open {
			if err := blockdevDel(c, all[i]); err != nil {
				return false, err
			}
		}
	}
	r.phase("device_del, blockdev-del")
	for set := 1; set <= r.sets; set++ {
		if _, err := c.Execute("remove-fd", map[string]any{"fdset-id": set}); err != nil {
			return false, fmt.Errorf("remove-fd %d: %w", set, err)
		}
	}
	r.membersHeld = 0
	r.phase("remove-fd")
	if _, err := c.Execute("quit", nil); err != nil {
		return false, err
	}
	exited := make(chan error, 1)
	go func() { exited <- vmm.Wait() }()
	var vmmOK bool
	select {
	case err := <-exited:
		vmmOK = err == nil
		if err != nil {
			r.printf("VMM exited: %v\n", err)
		}
	case <-time.After(30 * time.Second):
		r.printf("VMM did not exit after quit\n")
	}
	checkOK := true
	for _, img := range all {
		checkOK = r.checkImage(img) && checkOK
	}
	fdsOK := r.fdsOK.Load()
	ok = workloadOK && readBackOK && liveErr == nil && fdsOK && vmmOK && checkOK
	r.printf("checks: workload %s", verdict(workloadOK))
	if live {
		r.printf(", live snapshot and commits %s", verdict(liveErr == nil))
	}
	if o.write {
		r.printf(", read back %s", verdict(readBackOK))
	}
	r.printf(", fds %s, VMM exit %s, images %s\n", verdict(fdsOK), verdict(vmmOK), verdict(checkOK))
	return ok, nil
}

// active is the image the device writes to now: the bottom of its chain
// once an active commit pivoted it there.
func (ch *chain) active() *image {
	if ch.snap != nil && !ch.snap.open && ch.bottom().open {
		return ch.bottom()
	}
	if ch.snap != nil && ch.snap.open {
		return ch.snap
	}
	return ch.top
}

func sock(dir string) string { return filepath.Join(dir, "qmp.sock") }

// startVMM starts the second minivmm with every fd as -add-fd; confined
// (-fdset-only) when it runs on images this tool made, whose chain it
// wires by node names.
func (r *runner) startVMM(dir string, confined bool) (*exec.Cmd, *qmpclient.Client, error) {
	sock := sock(dir)
	args := []string{"-machine", "none", "-nodefaults", "-display", "none", "-m", "256",
		"-qmp", "unix:" + sock + ",server=on,wait=off"}
	if confined {
		args = append(args, "-fdset-only")
	}
	fd := 3
	for _, img := range r.allImages() {
		for range 2 {
			args = append(args, "-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=%s", fd, img.set, img.name()))
			fd++
		}
	}
	cmd := exec.Command(r.cfg.Self, args...)
	cmd.ExtraFiles = r.files
	cmd.Stderr = lockedWriter{r}
	// The VMM goes with the tool, however the tool ends (a closed pipe
	// on its output, ^C), as libvirt's children do not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	r.t0 = time.Now()
	c, err := qmpclient.Dial(sock, 10*time.Second)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, nil, fmt.Errorf("connecting to the VMM: %w", err)
	}
	return cmd, c, nil
}
