package cases

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/vm/blkdriver"
	"minivmm/vm/vutransport"
	"minivmm/vm/workload"
)

// vuBackend is a vhost-user-blk export process: its name and how to
// start it on an image.
type vuBackend struct {
	name string
	args func(format, img, sock string) (string, []string)
}

func vuBackends(e *harness.Env) ([]vuBackend, string) {
	bs := []vuBackend{{"minivmm", func(format, img, sock string) (string, []string) {
		return e.Minivmm, []string{"-blockdev", "driver=file,node-name=f,filename=" + img,
			"-blockdev", "driver=" + format + ",node-name=d,file=f",
			"-export", "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=" + sock + ",writable=on"}
	}}}
	qsd, err := exec.LookPath("qemu-storage-daemon")
	if err != nil {
		return bs, harness.NotInstalled("qemu-storage-daemon")
	}
	return append(bs, vuBackend{"qemu-storage-daemon", func(format, img, sock string) (string, []string) {
		return qsd, []string{"--blockdev", "driver=file,node-name=f,filename=" + img,
			"--blockdev", "driver=" + format + ",node-name=d,file=f",
			"--export", "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=" + sock + ",writable=on"}
	}}), ""
}

// start runs the back end on img and waits for its socket.
func (b vuBackend) start(format, img, sock string) (*exec.Cmd, error) {
	os.Remove(sock)
	bin, args := b.args(format, img, sock)
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	harness.Track(cmd.Process.Pid)
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			return cmd, nil
		}
		if i > 1000 {
			vuStop(cmd)
			return nil, fmt.Errorf("%s did not listen on %s: %s", harness.CommandLine(bin, args...), sock, out.Bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func vuStop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	harness.Untrack(cmd.Process.Pid)
}

// vuOps are the workloads, each run on its own connection.
var vuOps = []struct {
	rw    string
	depth int
}{{"randread", 1}, {"randread", 32}, {"randwrite", 1}, {"randwrite", 32}}

// VhostUser runs the built-in guest's driver (through package
// vutransport) on minivmm's vhost-user-blk export and on
// qemu-storage-daemon's, the same image, alternating, and measures the
// device model against the block layer alone (BenchmarkDeviceCost).
func VhostUser(e *harness.Env, s *report.Section) error {
	size, runtime := int64(256<<20), 2*time.Second
	if e.Quick {
		size, runtime = 64<<20, 500*time.Millisecond
	}
	dir := e.Path("vhost-user")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	raw, qc := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "disk.qcow2")
	if err := writePattern(raw, size); err != nil {
		return err
	}
	if _, err := harness.Exec(e.Minivmm, "img", "convert", "-f", "raw", "-O", "qcow2", raw, qc); err != nil {
		return err
	}
	images := []struct{ format, path string }{{"raw", raw}, {"qcow2", qc}}
	backends, missing := vuBackends(e)
	type key struct {
		format, backend string
		op              int
	}
	iops := map[key][]float64{}
	for rep := range e.Reps {
		for _, img := range images {
			for k := range backends {
				b := backends[(k+rep)%len(backends)]
				sock := filepath.Join(dir, "vu.sock")
				cmd, err := b.start(img.format, img.path, sock)
				if err != nil {
					return err
				}
				for i, op := range vuOps {
					v, err := vuRun(sock, op.rw, op.depth, runtime)
					if err != nil {
						vuStop(cmd)
						return fmt.Errorf("%s on %s (%s): %w", op.rw, b.name, img.format, err)
					}
					iops[key{img.format, b.name, i}] = append(iops[key{img.format, b.name, i}], v)
				}
				vuStop(cmd)
			}
		}
	}
	s.Text = fmt.Sprintf("The whole guest IO path (rings in guest memory -> device -> block layer -> file): the built-in guest's "+
		"virtio-blk driver as a vhost-user front end (`vm/vutransport`, one queue of 128, one job, %v a run, a new connection for each) "+
		"on minivmm's vhost-user-blk export and on qemu-storage-daemon's, each a process of its own started on the same "+
		"%d MiB image (raw, and qcow2 converted from it; all data, in the page cache), write cache on (the exports' default); "+
		"%d rounds, the back ends alternating.", runtime, size>>20, e.Reps)
	s.Commands = []string{reportCmd(e, "vhost-user"),
		"minivmm -blockdev driver=file,node-name=f,filename=IMG -blockdev driver=FMT,node-name=d,file=f -export type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=SOCK,writable=on",
		"qemu-storage-daemon --blockdev driver=file,node-name=f,filename=IMG --blockdev driver=FMT,node-name=d,file=f --export type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=SOCK,writable=on"}
	t := s.Table("4 KiB random requests, IOPS (median, min–max over the rounds)", "image", "workload", "depth",
		"minivmm", "qemu-storage-daemon", "minivmm / QSD (per round)")
	for _, img := range images {
		for i, op := range vuOps {
			m := iops[key{img.format, "minivmm", i}]
			q := iops[key{img.format, "qemu-storage-daemon", i}]
			qc, r, rv := missing, "–", math.NaN()
			if missing == "" {
				qc, r = num(q), ratio(ratiosOf(m, q))
				rv = med(ratiosOf(m, q))
				point(s, "vhost-user-iops", fmt.Sprintf("%s %s d%d", img.format, op.rw, op.depth), "qemu-storage-daemon", q)
			}
			point(s, "vhost-user-iops", fmt.Sprintf("%s %s d%d", img.format, op.rw, op.depth), "minivmm", m)
			t.Add(img.format, op.rw, strconv.Itoa(op.depth), num(m), qc, r)
			s.Targets = append(s.Targets, report.Check(
				fmt.Sprintf("vhost-user-blk %s %s depth %d: ≥ 2x qemu-storage-daemon's IOPS", img.format, op.rw, op.depth),
				rv, 2, r))
		}
	}
	return deviceCost(e, s)
}

// vuRun connects to sock, runs one workload and returns its IOPS.
func vuRun(sock, rw string, depth int, runtime time.Duration) (float64, error) {
	d, err := vutransport.Open(sock, 32<<20, blkdriver.Options{QueueSize: 128, Queues: 1})
	if err != nil {
		return 0, err
	}
	spec, err := workload.Parse(fmt.Sprintf("rw=%s,bs=4k,iodepth=%d,numjobs=1,runtime=%dms", rw, depth, runtime.Milliseconds()))
	if err != nil {
		d.Close()
		return 0, err
	}
	res, err := workload.Run(spec, []workload.Target{{Name: "vda", Disk: d.Disk, Shadow: workload.NewShadow()}}, workload.Options{})
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	if !res.OK() {
		return 0, fmt.Errorf("workload failed:\n%s", res)
	}
	if rw == "randread" {
		return res.Read.IOPS, nil
	}
	return res.Write.IOPS, nil
}

var deviceCostLine = regexp.MustCompile(`^BenchmarkDeviceCost/(\S+)/(\S+)/depth=(\d+)\S*\s.*\s([0-9.]+) device/node`)

// deviceCost runs BenchmarkDeviceCost (vm/virtioblk): the same 4 KiB
// random requests through the device model (a driver on a ring in a
// memfd, the device serving it) and straight on the block layer, in
// alternating chunks, one go test process per round.
func deviceCost(e *harness.Env, s *report.Section) error {
	benchtime := "1s"
	if e.Quick {
		benchtime = "0.2s"
	}
	args := []string{"test", "-run", "^$", "-bench", "^BenchmarkDeviceCost$", "-benchtime", benchtime,
		"-count", strconv.Itoa(e.Reps), "minivmm/vm/virtioblk"}
	r, err := harness.Exec("go", args...)
	if err != nil {
		return err
	}
	type key struct{ format, op, depth string }
	var order []key
	ratios := map[key][]float64{}
	sc := bufio.NewScanner(bytes.NewReader(r.Out))
	for sc.Scan() {
		m := deviceCostLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		k := key{m[1], m[2], m[3]}
		if _, ok := ratios[k]; !ok {
			order = append(order, k)
		}
		v, _ := strconv.ParseFloat(m[4], 64)
		ratios[k] = append(ratios[k], v)
	}
	if len(order) == 0 {
		return fmt.Errorf("go %v: no device/node figures in:\n%s", args, r.Out)
	}
	s.Commands = append(s.Commands, harness.CommandLine("go", args...))
	t := s.Table("The device model's cost: time through the device / time on the block layer alone (median, min–max over the rounds; lower is better)",
		"image", "workload", "depth", "device / block layer")
	for _, k := range order {
		xs := ratios[k]
		t.Add(k.format, k.op, k.depth, ratio(xs))
		s.Targets = append(s.Targets, report.CheckAtMost(
			fmt.Sprintf("device model %s %s depth %s: within 1.2x of the block layer alone", k.format, k.op, k.depth),
			med(xs), 1.2, ratio(xs)))
	}
	s.Note("Device cost: `BenchmarkDeviceCost` in vm/virtioblk, %s per case, %d rounds (-count): the built-in test driver keeps depth "+
		"requests in flight on one virtqueue in a memfd (add, kick, interrupt, reap), the device serves them through the block layer; "+
		"the same offsets go through Backend.ReadV/WriteV from depth goroutines, the two alternating in chunks of 4096 requests.", benchtime, e.Reps)
	return nil
}
