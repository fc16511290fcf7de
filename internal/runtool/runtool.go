// Package runtool is `minivmm run`: the product's job on embedded
// defaults. It acts as a management layer would: it makes (or takes)
// images, opens each as an O_RDONLY/O_RDWR pair, starts a second minivmm
// with them as -add-fd, attaches them over QMP as virtio-blk devices,
// runs the built-in guest's verifying workload with a progress line, and
// reports IOPS, latency and the fds the VMM held before and after. It
// exits 0 only if every check held.
package runtool

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"minivmm/block"
	"minivmm/internal/qmpclient"
	"minivmm/qemuopen"
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
}

// Defaults for the workload: a mixed verifying workload on the images
// the tool makes, a read-only verifying pass on a user's images.
const (
	defaultWrite = "rw=randrw,bs=4k,iodepth=32,numjobs=2,rwmixread=50,verify=on"
	defaultRead  = "rw=randread,bs=4k,iodepth=32,numjobs=2,verify=on"
)

// image is one disk the VMM gets: a file, its format, and a backing
// image wired explicitly (so the VMM opens nothing by path).
type image struct {
	path    string
	format  string
	backing *image
	set     int // fdset of its O_RDONLY/O_RDWR pair
	node    string
}

// Run is the command: it returns the exit status.
func Run(args []string, cfg Config) int {
	fs := pflag.NewFlagSet("minivmm run", pflag.ContinueOnError)
	fs.SetOutput(cfg.Stderr)
	write := fs.Bool("write", false, "let the workload write to the images given (default: a read-only verify pass)")
	spec := fs.String("workload", "", "the workload, in -workload's syntax (default: "+defaultWrite+" on the images run makes)")
	runtime := fs.Duration("runtime", 5*time.Second, "how long the workload runs")
	keep := fs.Bool("keep", false, "keep the temporary directory")
	fs.Usage = func() {
		fmt.Fprintf(cfg.Stderr, "usage: minivmm run [--write] [--workload SPEC] [--runtime D] [IMAGE...]\n\n"+
			"Without IMAGE, makes a qcow2 image over a raw base in a temporary directory.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 1
	}
	r := &runner{cfg: cfg}
	ok, err := r.run(fs.Args(), *write, *spec, *runtime, *keep)
	if err != nil {
		fmt.Fprintf(cfg.Stderr, "minivmm run: %v\n", err)
		return 1
	}
	if !ok {
		return 1
	}
	return 0
}

type runner struct {
	cfg    Config
	files  []*os.File
	images []*image
	sets   int
	// snap is the overlay a live snapshot puts over the image run made,
	// while the workload runs (nil for a user's images).
	snap    *image
	snapped bool // the snapshot was taken: its nodes are to be deleted
}

func (r *runner) printf(format string, a ...any) { fmt.Fprintf(r.cfg.Stdout, format, a...) }

func (r *runner) run(paths []string, write bool, specText string, runtime time.Duration, keep bool) (ok bool, err error) {
	dir, err := os.MkdirTemp("", "minivmm-run-")
	if err != nil {
		return false, err
	}
	if keep {
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
	if made {
		if err := r.makeImages(dir); err != nil {
			return false, err
		}
		write = true
	} else if err := r.probeImages(paths); err != nil {
		return false, err
	}
	if specText == "" {
		specText = defaultRead
		if write {
			specText = defaultWrite
		}
	}
	spec, err := workload.Parse(specText)
	if err != nil {
		return false, err
	}
	if spec.Runtime == 0 {
		spec.Runtime = runtime
	}
	if spec.Writes() && !write {
		return false, errors.New("the workload writes: give --write to let it write to your images")
	}
	for _, img := range r.images {
		if err := r.openPair(img); err != nil {
			return false, err
		}
	}
	if r.snap != nil {
		if err := r.openPair(r.snap); err != nil {
			return false, err
		}
	}

	vmm, c, err := r.startVMM(dir, made)
	if err != nil {
		return false, err
	}
	defer func() {
		if vmm.Process != nil && vmm.ProcessState == nil {
			vmm.Process.Kill()
			vmm.Wait()
		}
	}()
	defer c.Close()
	pid := vmm.Process.Pid
	before, _ := countFds(pid)
	r.printf("VMM pid %d holds %d fds (%d passed as -add-fd in %d fdsets)\n", pid, before, len(r.files), r.sets)

	var devices []string
	for _, img := range r.images {
		if err := r.blockdevAdd(c, img, write); err != nil {
			return false, err
		}
		id := fmt.Sprintf("vd%d", len(devices))
		if _, err := c.Execute("device_add", map[string]any{"driver": "virtio-blk-pci", "id": id, "drive": img.node, "num-queues": 2}); err != nil {
			return false, fmt.Errorf("device_add %s: %w", id, err)
		}
		devices = append(devices, id)
		r.printf("attached %s (%s) as virtio-blk device %s\n", img.path, img.format, id)
	}
	attached, _ := countFds(pid)
	r.printf("workload: %s\n", spec)

	c.OnEvent = func(name string, data map[string]any) {
		if name != "X_WORKLOAD_PROGRESS" {
			return
		}
		line, _ := data["line"].(string)
		if r.cfg.TTY {
			fmt.Fprintf(r.cfg.Stderr, "\r%s ", line)
		} else {
			fmt.Fprintln(r.cfg.Stderr, line)
		}
	}
	snapDone := make(chan error, 1)
	if r.snap != nil {
		go func() { snapDone <- r.liveSnapshot(sock(dir), spec.Runtime/2) }()
	} else {
		snapDone <- nil
	}
	res, err := c.Execute("x-workload", map[string]any{"spec": spec.String(), "progress": true})
	if r.cfg.TTY {
		fmt.Fprintln(r.cfg.Stderr)
	}
	if err != nil {
		return false, fmt.Errorf("x-workload: %w", err)
	}
	result, _ := res.(map[string]any)
	workloadOK := r.report(result)
	snapErr := <-snapDone
	if snapErr != nil {
		r.printf("live snapshot: %v\n", snapErr)
	}

	for _, id := range devices {
		if _, err := c.Execute("device_del", map[string]any{"id": id}); err != nil {
			return false, fmt.Errorf("device_del %s: %w", id, err)
		}
		for {
			data, err := c.Event("DEVICE_DELETED", 30*time.Second)
			if err != nil {
				return false, err
			}
			if data["device"] == id {
				break
			}
		}
	}
	for _, img := range r.blockdevOrder() {
		if img == r.snap && !r.snapped {
			continue
		}
		for _, n := range []string{img.node, img.node + "-file"} {
			if _, err := c.Execute("blockdev-del", map[string]any{"node-name": n}); err != nil {
				return false, fmt.Errorf("blockdev-del %s: %w", n, err)
			}
		}
	}
	detached, _ := countFds(pid)
	for set := 1; set <= r.sets; set++ {
		if _, err := c.Execute("remove-fd", map[string]any{"fdset-id": set}); err != nil {
			return false, fmt.Errorf("remove-fd %d: %w", set, err)
		}
	}
	released, _ := countFds(pid)
	r.printf("fds held by the VMM: %d before attaching, %d attached, %d after detaching, %d after remove-fd\n",
		before, attached, detached, released)
	fdsOK := detached == before && released == before-len(r.files)
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
	if made {
		checkOK = r.checkImage(r.images[0].path)
		if r.snap != nil {
			checkOK = r.checkImage(r.snap.path) && checkOK
		}
	}
	ok = workloadOK && fdsOK && vmmOK && checkOK && snapErr == nil
	verdict := func(b bool) string {
		if b {
			return "ok"
		}
		return "FAILED"
	}
	r.printf("checks: workload %s, fds %s, VMM exit %s", verdict(workloadOK), verdict(fdsOK), verdict(vmmOK))
	if r.snap != nil {
		r.printf(", live snapshot %s", verdict(snapErr == nil))
	}
	if made {
		r.printf(", image check %s", verdict(checkOK))
	}
	r.printf("\n")
	return ok, nil
}

// makeImages makes a raw base and a qcow2 overlay over it, with minivmm
// img as a user would.
func (r *runner) makeImages(dir string) error {
	base := filepath.Join(dir, "base.raw")
	overlay := filepath.Join(dir, "overlay.qcow2")
	if err := os.WriteFile(base, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(base, 64<<20); err != nil {
		return err
	}
	out, err := exec.Command(r.cfg.Self, "img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", overlay).CombinedOutput()
	if err != nil {
		return fmt.Errorf("img create: %v: %s", err, out)
	}
	snap := filepath.Join(dir, "snapshot.qcow2")
	out, err = exec.Command(r.cfg.Self, "img", "create", "-q", "-f", "qcow2", "-b", overlay, "-F", "qcow2", snap).CombinedOutput()
	if err != nil {
		return fmt.Errorf("img create: %v: %s", err, out)
	}
	r.printf("made %s over %s in %s (and %s for a live snapshot)\n", filepath.Base(overlay), filepath.Base(base), dir, filepath.Base(snap))
	b := &image{path: base, format: "raw"}
	r.images = []*image{{path: overlay, format: "qcow2", backing: b}}
	r.snap = &image{path: snap, format: "qcow2"}
	return nil
}

// probeImages names each user image's format, reading only.
func (r *runner) probeImages(paths []string) error {
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	for _, p := range paths {
		format, err := block.ProbeFile(reg, p)
		if err != nil {
			return err
		}
		r.images = append(r.images, &image{path: p, format: format})
	}
	return nil
}

// openPair opens img (and its backing image) read-only and read-write,
// for one fdset each.
func (r *runner) openPair(img *image) error {
	if img.backing != nil {
		if err := r.openPair(img.backing); err != nil {
			return err
		}
	}
	r.sets++
	img.set = r.sets
	img.node = fmt.Sprintf("disk%d", img.set)
	for _, mode := range []int{os.O_RDONLY, os.O_RDWR} {
		f, err := os.OpenFile(img.path, mode, 0)
		if err != nil {
			return err
		}
		r.files = append(r.files, f)
	}
	return nil
}

// startVMM starts the second minivmm with every fd as -add-fd; confined
// (-fdset-only) when it runs on images this tool made, whose chain it
// wires by node names.
func sock(dir string) string { return filepath.Join(dir, "qmp.sock") }

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
			args = append(args, "-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=%s", fd, img.set, filepath.Base(img.path)))
			fd++
		}
	}
	cmd := exec.Command(r.cfg.Self, args...)
	cmd.ExtraFiles = r.files
	cmd.Stderr = r.cfg.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	c, err := qmpclient.Dial(sock, 10*time.Second)
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, nil, fmt.Errorf("connecting to the VMM: %w", err)
	}
	return cmd, c, nil
}

func (r *runner) allImages() []*image {
	var out []*image
	var add func(*image)
	add = func(i *image) {
		if i.backing != nil {
			add(i.backing)
		}
		out = append(out, i)
	}
	for _, i := range r.images {
		add(i)
	}
	if r.snap != nil {
		out = append(out, r.snap)
	}
	return out
}

// blockdevOrder lists the images top first, the order blockdev-del takes.
func (r *runner) blockdevOrder() []*image {
	all := r.allImages()
	out := make([]*image, len(all))
	for i, img := range all {
		out[len(all)-1-i] = img
	}
	return out
}

// blockdevAdd adds img's nodes over its fdset, as libvirt does.
func (r *runner) blockdevAdd(c *qmpclient.Client, img *image, write bool) error {
	if img.backing != nil {
		if err := r.blockdevAdd(c, img.backing, false); err != nil {
			return err
		}
	}
	file := map[string]any{"driver": "file", "node-name": img.node + "-file",
		"filename": fmt.Sprintf("/dev/fdset/%d", img.set), "auto-read-only": true, "discard": "unmap"}
	if !write {
		file["read-only"] = true
	}
	if _, err := c.Execute("blockdev-add", file); err != nil {
		return fmt.Errorf("blockdev-add %s: %w", img.path, err)
	}
	format := map[string]any{"driver": img.format, "node-name": img.node, "file": img.node + "-file"}
	if !write {
		format["read-only"] = true
	}
	if img.backing != nil {
		format["backing"] = img.backing.node
	}
	if _, err := c.Execute("blockdev-add", format); err != nil {
		return fmt.Errorf("blockdev-add %s: %w", img.path, err)
	}
	return nil
}

// liveSnapshot waits, then puts the snapshot overlay over the running
// image as libvirt does (blockdev-add of the overlay over its fdset, then
// blockdev-snapshot), on a connection of its own, and prints the time
// the switch took.
func (r *runner) liveSnapshot(sock string, after time.Duration) error {
	time.Sleep(after)
	c, err := qmpclient.Dial(sock, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	top := r.images[0]
	began := time.Now()
	if _, err := c.Execute("blockdev-add", map[string]any{"driver": "file", "node-name": r.snap.node + "-file",
		"filename": fmt.Sprintf("/dev/fdset/%d", r.snap.set), "auto-read-only": true, "discard": "unmap"}); err != nil {
		return fmt.Errorf("blockdev-add: %w", err)
	}
	if _, err := c.Execute("blockdev-add", map[string]any{"driver": "qcow2", "node-name": r.snap.node,
		"file": r.snap.node + "-file", "backing": nil}); err != nil {
		c.Execute("blockdev-del", map[string]any{"node-name": r.snap.node + "-file"})
		return fmt.Errorf("blockdev-add: %w", err)
	}
	added := time.Since(began)
	if _, err := c.Execute("blockdev-snapshot", map[string]any{"node": top.node, "overlay": r.snap.node}); err != nil {
		c.Execute("blockdev-del", map[string]any{"node-name": r.snap.node})
		c.Execute("blockdev-del", map[string]any{"node-name": r.snap.node + "-file"})
		return fmt.Errorf("blockdev-snapshot: %w", err)
	}
	r.snapped = true
	fmt.Fprintf(r.cfg.Stderr, "\rlive snapshot onto %s: overlay opened in %v, switch in %v, under the running workload\n",
		filepath.Base(r.snap.path), added.Round(time.Microsecond), (time.Since(began) - added).Round(time.Microsecond))
	return nil
}

// report prints the workload's result, and says whether it is clean.
func (r *runner) report(res map[string]any) bool {
	f := func(v any) float64 {
		n, _ := v.(json.Number).Float64()
		return n
	}
	elapsed := time.Duration(f(res["elapsed-ns"]))
	for _, dir := range []string{"read", "write", "verify"} {
		d, _ := res[dir].(map[string]any)
		if d == nil || f(d["ios"]) == 0 {
			continue
		}
		lat := d["lat-ns"].(map[string]any)
		us := func(k string) string { return fmt.Sprintf("%.1f", f(lat[k])/1e3) }
		r.printf("  %-6s IOPS=%.0f, BW=%.1fMiB/s, %d requests in %v\n", dir+":", f(d["iops"]), f(d["bw"])/(1<<20), int64(f(d["ios"])), elapsed.Round(time.Millisecond))
		r.printf("         lat (usec): p50=%s, p90=%s, p99=%s, p99.9=%s, max=%s\n", us("p50"), us("p90"), us("p99"), us("p99.9"), us("max"))
	}
	r.printf("  verify: %d sectors checked, %d not known, %d mismatches\n",
		int64(f(res["checked-sectors"])), int64(f(res["unverified-sectors"])), int64(f(res["mismatch-count"])))
	if mm, _ := res["mismatches"].([]any); len(mm) > 0 {
		for _, m := range mm {
			r.printf("    %s\n", m.(map[string]any)["message"])
		}
	}
	if e, _ := res["first-io-error"].(string); e != "" {
		r.printf("  errors: %d (first: %s)\n", int64(f(res["io-errors"])), e)
	}
	return res["ok"] == true
}

// checkImage runs minivmm img check on the image the workload wrote.
func (r *runner) checkImage(path string) bool {
	out, err := exec.Command(r.cfg.Self, "img", "check", path).CombinedOutput()
	r.printf("img check %s: %s\n", filepath.Base(path), strings.Join(strings.Fields(strings.ReplaceAll(string(out), "\n", "; ")), " "))
	return err == nil
}

// countFds is how many fds process pid holds.
func countFds(pid int) (int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(entries), nil
}
