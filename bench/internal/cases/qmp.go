package cases

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/bench/internal/benchout"
	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/bench/internal/stats"
	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/internal/qmptest"
	"minivmm/qemuopen"
)

// vmm is a running VMM (minivmm or QEMU) with a negotiated QMP connection.
type vmm struct {
	t *harness.T
	p *qmptest.Process
	c *qmptest.Client
}

// startVMM runs bin -machine none -nodefaults -display none -qmp unix:...
// (minivmm takes QEMU's options); it is killed when t's cleanups run.
func startVMM(t *harness.T, bin string) *vmm {
	p := qmptest.Start(t, bin, nil)
	harness.Track(p.Pid)
	t.Cleanup(func() { harness.Untrack(p.Pid) }) // runs before qmptest's kill
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	return &vmm{t: t, p: p, c: c}
}

// do executes cmd and fails t unless it returns success.
func (v *vmm) do(cmd string, args map[string]any, fds ...int) map[string]any {
	r := v.c.Execute(cmd, args, fds...)
	if _, ok := r["return"]; !ok {
		v.t.Fatalf("%s %v: %v", cmd, args, r["error"])
	}
	return r
}

// timed is do, returning the round trip in seconds.
func (v *vmm) timed(cmd string, args map[string]any) float64 {
	start := time.Now()
	v.do(cmd, args)
	return time.Since(start).Seconds()
}

// addFd opens path with mode and passes the fd to set over QMP add-fd
// (SCM_RIGHTS), as a management layer does; our copy is closed.
func (v *vmm) addFd(set int, path string, mode int) {
	fd, err := unix.Open(path, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		v.t.Fatalf("%v", err)
	}
	defer unix.Close(fd)
	v.do("add-fd", map[string]any{"fdset-id": set, "opaque": fmt.Sprintf("mode %d", mode)}, fd)
}

// memory reads VmRSS and VmHWM of the VMM.
func (v *vmm) memory() benchout.Memory {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", v.p.Pid))
	if err != nil {
		v.t.Fatalf("%v", err)
	}
	m, err := benchout.ParseProcStatus(b)
	if err != nil {
		v.t.Fatalf("%v", err)
	}
	return m
}

// side is one VMM under comparison.
type side struct {
	name, bin string
}

func vmmSides(e *harness.Env) []side {
	ss := []side{{"minivmm", e.Minivmm}}
	if e.QemuSys != "" {
		ss = append(ss, side{"QEMU", e.QemuSys})
	}
	return ss
}

// qemuSysNote is what a QEMU column says when QEMU is missing.
func qemuSysNote(e *harness.Env) string {
	if e.QemuSys == "" {
		return harness.NotInstalled("qemu-system-x86_64")
	}
	return ""
}

// BlockdevAdd times QMP blockdev-add (and blockdev-del) of a raw and a
// qcow2 node whose file is /dev/fdset/N, fds passed with add-fd, against
// minivmm and QEMU.
func BlockdevAdd(e *harness.Env, s *report.Section) error {
	raw, qc := e.Path("add.raw"), e.Path("add.qcow2")
	if err := writePattern(raw, 16<<20); err != nil {
		return err
	}
	if err := createQcow2(qc, qcow2.CreateOptions{Size: 1 << 30}); err != nil {
		return err
	}
	iters := 100
	if e.Quick {
		iters = 20
	}
	formats := []struct {
		name string
		set  int
	}{{"raw", 1}, {"qcow2", 2}}
	sides := vmmSides(e)
	// res[side][format] = per-rep mean round trip of add, and of del.
	type key struct{ side, format string }
	add, del := map[key][]float64{}, map[key][]float64{}
	err := harness.WithT("blockdev-add", func(t *harness.T) {
		vs := make([]*vmm, len(sides))
		for i, sd := range sides {
			vs[i] = startVMM(t, sd.bin)
			vs[i].addFd(1, raw, unix.O_RDWR)
			vs[i].addFd(2, qc, unix.O_RDWR)
		}
		for rep := range e.Reps {
			for k := range sides {
				i := (k + rep) % len(sides)
				for _, f := range formats {
					var a, d float64
					for range iters {
						a += vs[i].timed("blockdev-add", map[string]any{"driver": f.name, "node-name": "n",
							"file": map[string]any{"driver": "file", "filename": fmt.Sprintf("/dev/fdset/%d", f.set)}})
						d += vs[i].timed("blockdev-del", map[string]any{"node-name": "n"})
					}
					kk := key{sides[i].name, f.name}
					add[kk] = append(add[kk], a/float64(iters))
					del[kk] = append(del[kk], d/float64(iters))
				}
			}
		}
	})
	if err != nil {
		return err
	}
	s.Text = fmt.Sprintf("One VMM of each kind (`-machine none -nodefaults -display none -qmp unix:...`), "+
		"the image's O_RDWR fd passed with QMP `add-fd` (SCM_RIGHTS) to set 1 (raw, 16 MiB) or 2 (qcow2, 1 GiB, empty); "+
		"then %d x (`blockdev-add` {driver, node-name, file: {driver: file, filename: /dev/fdset/N}} and `blockdev-del`), "+
		"each QMP round trip timed by the client; %d rounds, the VMMs alternating.", iters, e.Reps)
	s.Commands = []string{reportCmd(e, "blockdev-add")}
	t := s.Table("", "format", "minivmm add", "QEMU add", "QEMU/minivmm (add)", "minivmm del", "QEMU del")
	for _, f := range formats {
		m, q := key{"minivmm", f.name}, key{"QEMU", f.name}
		qa, qd, r := qemuSysNote(e), qemuSysNote(e), "–"
		if e.QemuSys != "" {
			qa, qd, r = dur(add[q]), dur(del[q]), ratio(stats.Ratios(add[q], add[m]))
			point(s, "latency", "blockdev-add "+f.name, "QEMU", add[q])
		}
		point(s, "latency", "blockdev-add "+f.name, "minivmm", add[m])
		t.Add(f.name, dur(add[m]), qa, r, dur(del[m]), qd)
	}
	return nil
}

// Reopen times read-only -> read-write -> read-only of a raw node and its
// file over an fdset holding an O_RDONLY and an O_RDWR fd: in process
// (block.Graph.Reopen), and as QMP blockdev-reopen round trips against
// minivmm and QEMU.
func Reopen(e *harness.Env, s *report.Section) error {
	path := e.Path("reopen.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		return err
	}
	nodes := func(ro bool) []any {
		return []any{
			map[string]any{"driver": "file", "node-name": "f", "read-only": ro, "filename": "/dev/fdset/1"},
			map[string]any{"driver": "raw", "node-name": "r", "read-only": ro, "file": "f"},
		}
	}
	// In process.
	inproc, err := reopenInProcess(e, path, nodes)
	if err != nil {
		return err
	}
	// Over QMP.
	iters := 100
	if e.Quick {
		iters = 20
	}
	sides := vmmSides(e)
	rt := map[string][]float64{}
	floor := map[string][]float64{} // two query-status round trips
	err = harness.WithT("reopen", func(t *harness.T) {
		vs := make([]*vmm, len(sides))
		for i, sd := range sides {
			v := startVMM(t, sd.bin)
			v.addFd(1, path, unix.O_RDONLY)
			v.addFd(1, path, unix.O_RDWR)
			for _, n := range nodes(true) {
				v.do("blockdev-add", n.(map[string]any))
			}
			vs[i] = v
		}
		for rep := range e.Reps {
			for k := range sides {
				i := (k + rep) % len(sides)
				var sum float64
				for range iters {
					sum += vs[i].timed("blockdev-reopen", map[string]any{"options": nodes(false)})
					sum += vs[i].timed("blockdev-reopen", map[string]any{"options": nodes(true)})
				}
				rt[sides[i].name] = append(rt[sides[i].name], sum/float64(iters))
				sum = 0
				for range iters {
					sum += vs[i].timed("query-status", nil)
					sum += vs[i].timed("query-status", nil)
				}
				floor[sides[i].name] = append(floor[sides[i].name], sum/float64(iters))
			}
		}
	})
	if err != nil {
		return err
	}
	s.Text = fmt.Sprintf("A raw node `r` over a file node `f` on /dev/fdset/1, which holds an O_RDONLY and an O_RDWR fd of one 1 MiB file "+
		"(over QMP: both passed with `add-fd`, SCM_RIGHTS). One round trip is read-only -> read-write -> read-only of both nodes "+
		"(two reopen transactions). In process: `block.Graph.Reopen`. Over QMP: two `blockdev-reopen` commands, each timed "+
		"from send to reply by the client, %d round trips per round, %d rounds, the VMMs alternating; "+
		"then as many pairs of `query-status`, the cost of a QMP round trip that does nothing.", iters, e.Reps)
	s.Commands = []string{reportCmd(e, "reopen"), "go test -run=NONE -bench=ReopenFdset ./bench/"}
	t := s.Table("", "case", "minivmm", "QEMU", "QEMU/minivmm")
	t.Add("in-process round trip (block.Graph.Reopen x2)", dur(inproc), "no in-process equivalent", "–")
	point(s, "latency", "reopen in-process", "minivmm", inproc)
	q, r := qemuSysNote(e), "–"
	rs := stats.Ratios(rt["QEMU"], rt["minivmm"])
	if e.QemuSys != "" {
		q, r = dur(rt["QEMU"]), ratio(rs)
		point(s, "latency", "QMP blockdev-reopen x2", "QEMU", rt["QEMU"])
	}
	point(s, "latency", "QMP blockdev-reopen x2", "minivmm", rt["minivmm"])
	t.Add("QMP round trip (blockdev-reopen x2)", dur(rt["minivmm"]), q, r)
	q, r = qemuSysNote(e), "–"
	if e.QemuSys != "" {
		q, r = dur(floor["QEMU"]), ratio(stats.Ratios(floor["QEMU"], floor["minivmm"]))
	}
	t.Add("QMP floor: query-status x2 (the monitor's own cost)", dur(floor["minivmm"]), q, r)
	tg := report.Check("QMP blockdev-reopen round trip at least 10x faster than QEMU's", med(rs), 10, ratio(rs))
	if e.QemuSys == "" {
		tg.Measured = harness.NotInstalled("qemu-system-x86_64")
	}
	if tg.Status == report.NotMet {
		tg.Note = "see the QMP floor (query-status) row under Reopen: the part of the round trip that is the monitor's, not the block layer's"
	}
	s.Targets = append(s.Targets, tg)
	return nil
}

func reopenInProcess(e *harness.Env, path string, nodes func(bool) []any) ([]float64, error) {
	reg := qemuopen.New(qemuopen.Config{})
	g := block.NewGraph(reg)
	defer func() { g.Close(); reg.CloseAll() }()
	set := int64(1)
	for _, mode := range []int{unix.O_RDONLY, unix.O_RDWR} {
		fd, err := unix.Open(path, mode|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		if _, _, err := reg.AddFd(fd, qemuopen.AddRequest{SetID: &set}); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	opts := func(ro bool) []block.Options {
		var out []block.Options
		for _, n := range nodes(ro) {
			out = append(out, block.Options(n.(map[string]any)))
		}
		return out
	}
	for _, o := range opts(true) {
		if _, err := g.Add(o); err != nil {
			return nil, err
		}
	}
	rw, ro := opts(false), opts(true)
	op := func() error {
		if err := g.Reopen(rw); err != nil {
			return err
		}
		return g.Reopen(ro)
	}
	target := 200 * time.Millisecond
	if e.Quick {
		target = 50 * time.Millisecond
	}
	n, err := harness.Calibrate(target, op)
	if err != nil {
		return nil, err
	}
	out, err := harness.Interleave(e.Reps, func() (float64, error) { return harness.PerOp(n, op) })
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// Memory starts a VMM of each kind and adds 100 qcow2 nodes over QMP
// blockdev-add, reading VmRSS/VmHWM from /proc at 0, 1, 10 and 100.
func Memory(e *harness.Env, s *report.Section) error {
	const maxNodes = 100
	counts := []int{0, 1, 10, 100}
	imgs := make([]string, maxNodes)
	for i := range imgs {
		imgs[i] = e.Path(fmt.Sprintf("mem%03d.qcow2", i))
		if err := createQcow2(imgs[i], qcow2.CreateOptions{Size: 10 << 30}); err != nil {
			return err
		}
	}
	sides := vmmSides(e)
	// rss[side][count], hwm[side][count]: one value per round.
	rss := map[string]map[int][]float64{}
	hwm := map[string]map[int][]float64{}
	for _, sd := range sides {
		rss[sd.name], hwm[sd.name] = map[int][]float64{}, map[int][]float64{}
	}
	reps := e.Reps
	for rep := range reps {
		for k := range sides {
			sd := sides[(k+rep)%len(sides)]
			err := harness.WithT("memory", func(t *harness.T) {
				v := startVMM(t, sd.bin)
				record := func(n int) {
					m := v.memory()
					rss[sd.name][n] = append(rss[sd.name][n], float64(m.RSS))
					hwm[sd.name][n] = append(hwm[sd.name][n], float64(m.HWM))
				}
				record(0)
				for i := range maxNodes {
					v.do("blockdev-add", map[string]any{"driver": "qcow2", "node-name": fmt.Sprintf("q%d", i),
						"file": map[string]any{"driver": "file", "filename": imgs[i]}})
					if n := i + 1; n == 1 || n == 10 || n == 100 {
						record(n)
					}
				}
			})
			if err != nil {
				return err
			}
		}
	}
	s.Text = fmt.Sprintf("A fresh VMM of each kind per round (`-machine none -nodefaults -display none`), "+
		"then QMP `blockdev-add` of qcow2 nodes, each over its own empty 10 GiB image (read-write, default cache sizes); "+
		"VmRSS and VmHWM from /proc/PID/status after 0, 1, 10 and 100 nodes; %d rounds.", reps)
	s.Commands = []string{reportCmd(e, "memory")}
	t := s.Table("", "qcow2 nodes", "minivmm VmRSS", "QEMU VmRSS", "QEMU/minivmm", "minivmm VmHWM", "QEMU VmHWM")
	for _, n := range counts {
		m := rss["minivmm"][n]
		q, r, qh := qemuSysNote(e), "–", qemuSysNote(e)
		if e.QemuSys != "" {
			q, r, qh = stats.Summarize(rss["QEMU"][n]).Format(stats.Bytes), ratio(stats.Ratios(rss["QEMU"][n], m)),
				stats.Summarize(hwm["QEMU"][n]).Format(stats.Bytes)
			point(s, "memory", strconv.Itoa(n), "QEMU", scale(rss["QEMU"][n], 1.0/(1<<20)))
		}
		point(s, "memory", strconv.Itoa(n), "minivmm", scale(m, 1.0/(1<<20)))
		t.Add(strconv.Itoa(n), stats.Summarize(m).Format(stats.Bytes), q, r, stats.Summarize(hwm["minivmm"][n]).Format(stats.Bytes), qh)
	}
	per := func(name string) []float64 {
		var out []float64
		for i := range rss[name][100] {
			out = append(out, (rss[name][100][i]-rss[name][0][i])/100)
		}
		return out
	}
	pm := per("minivmm")
	q := qemuSysNote(e)
	if e.QemuSys != "" {
		q = stats.Summarize(per("QEMU")).Format(stats.Bytes)
	}
	t.Add("per node (100 nodes - 0) / 100", stats.Summarize(pm).Format(stats.Bytes), q, "", "", "")
	s.Charts = []string{"memory.svg"}
	return nil
}
