package cases

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"minivmm/bench/internal/benchout"
	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/bench/internal/stats"
	"minivmm/internal/qmptest"
)

// NBD measures minivmm's NBD export against qemu-storage-daemon's, each
// serving a copy of one raw image on a unix socket, driven by the same
// clients in the same run: qemu-img bench at 4 KiB, depth 1 and 64, and
// nbdcopy in and out.
func NBD(e *harness.Env, s *report.Section) error {
	qsd, err := exec.LookPath("qemu-storage-daemon")
	if err != nil || e.QemuImg == "" {
		s.Note("skipped: the case compares with qemu-storage-daemon and drives both with qemu-img (%v)", err)
		return nil
	}
	nbdcopy, _ := exec.LookPath("nbdcopy")
	size := int64(1 << 30)
	count := 50000
	if e.Quick {
		size, count = 64<<20, 5000
	}
	return harness.WithT("nbd", func(t *harness.T) {
		src := e.Path("nbd-src.raw")
		if err := writePattern(src, size); err != nil {
			t.Fatalf("%v", err)
		}
		mineImg, qsdImg := e.Path("nbd-mine.raw"), e.Path("nbd-qsd.raw")
		for _, p := range []string{mineImg, qsdImg} {
			if _, err := harness.Exec("cp", "--sparse=never", src, p); err != nil {
				t.Fatalf("%v", err)
			}
		}
		dir := t.TempDir()
		mineSock, qsdSock := filepath.Join(dir, "mine.sock"), filepath.Join(dir, "qsd.sock")
		p := qmptest.Start(t, e.Minivmm, nil,
			"-blockdev", "driver=file,node-name=f,filename="+mineImg,
			"-nbd-server", "addr.type=unix,addr.path="+mineSock,
			"-export", "type=nbd,id=e,node-name=f,name=disk,writable=on")
		harness.Track(p.Pid)
		t.Cleanup(func() { harness.Untrack(p.Pid) })
		pid := filepath.Join(dir, "qsd.pid")
		q := qmptest.StartArgs(t, qsd, nil,
			"--blockdev", "driver=file,node-name=f,filename="+qsdImg,
			"--nbd-server", "addr.type=unix,addr.path="+qsdSock,
			"--export", "type=nbd,id=e,node-name=f,name=disk,writable=on",
			"--pidfile", pid)
		harness.Track(q.Pid)
		t.Cleanup(func() { harness.Untrack(q.Pid) })
		for i := 0; ; i++ {
			if _, err := os.Stat(pid); err == nil {
				break
			}
			if i > 1000 {
				t.Fatalf("qemu-storage-daemon did not start: %s", q.Output())
			}
			time.Sleep(10 * time.Millisecond)
		}
		mineURI, qsdURI := "nbd+unix:///disk?socket="+mineSock, "nbd+unix:///disk?socket="+qsdSock

		s.Text = fmt.Sprintf("minivmm's NBD export (-nbd-server, -export type=nbd) against qemu-storage-daemon's, each serving its own "+
			"copy of one %d MiB raw image filled with data (default cache mode) on a unix socket, in the same run, rounds interleaved "+
			"(%d per figure, the servers alternating first). qemu-img bench does sequential 4 KiB requests over nbd+unix://, "+
			"%d per run; req/s from its \"Run completed\" line. The ratio is minivmm/qemu-storage-daemon within a round "+
			"(above 1: minivmm's export is faster). Each server's CPU time (user+system, /proc) per request is measured around "+
			"the same runs: it moves much less with the machine's load than the rates do (qsd/minivmm above 1: minivmm spends less). "+
			"qemu-img's own CPU time and voluntary context switches (getrusage) per request show which side is the limit: a client "+
			"that almost never waits (waits/req near 0) is runnable throughout and sets the rate; on a loaded machine its share "+
			"of a core does.", size>>20, e.Reps, count)
		s.Commands = []string{reportCmd(e, "nbd"),
			"minivmm -blockdev driver=file,node-name=f,filename=IMG -nbd-server addr.type=unix,addr.path=SOCK -export type=nbd,id=e,node-name=f,name=disk,writable=on",
			"qemu-storage-daemon --blockdev driver=file,node-name=f,filename=IMG --nbd-server addr.type=unix,addr.path=SOCK --export type=nbd,id=e,node-name=f,name=disk,writable=on",
			fmt.Sprintf("qemu-img bench -f raw -c %d -d DEPTH -s 4096 [-w --pattern=165] 'nbd+unix:///disk?socket=SOCK'", count),
			"nbdcopy 'nbd+unix:///disk?socket=SOCK' OUT.raw; nbdcopy IN.raw 'nbd+unix:///disk?socket=SOCK'",
		}
		tb := s.Table("", "op", "depth", "minivmm req/s", "qemu-storage-daemon req/s", "minivmm/qsd", "server CPU µs/req minivmm", "qsd", "qsd/minivmm CPU",
			"qemu-img CPU µs/req with minivmm", "with qsd", "qemu-img waits/req with minivmm", "with qsd")
		// Each server's CPU time per request, from /proc: on a shared
		// machine wall-clock rates swing with the neighbours' load, the
		// CPU a server spends on a request much less.
		cpu := map[int]*[]float64{p.Pid: new([]float64), q.Pid: new([]float64)}
		// The client's own CPU time and voluntary context switches (its
		// waits for replies) per request, by server: a client that
		// rarely waits is the limit, not the server.
		clientCPU := map[int]*[]float64{p.Pid: new([]float64), q.Pid: new([]float64)}
		clientWaits := map[int]*[]float64{p.Pid: new([]float64), q.Pid: new([]float64)}
		bench := func(uri string, pid, depth int, write bool) func() (float64, error) {
			return func() (float64, error) {
				c0, err := procCPU(pid)
				if err != nil {
					return 0, err
				}
				args := []string{"bench", "-f", "raw", "-c", strconv.Itoa(count), "-d", strconv.Itoa(depth), "-s", "4096"}
				if write {
					args = append(args, "-w", "--pattern=165")
				}
				r, ru, err := execUsage(e.QemuImg, append(args, uri)...)
				if err != nil {
					return 0, err
				}
				*clientCPU[pid] = append(*clientCPU[pid], float64(ru.Utime.Nano()+ru.Stime.Nano())/1e3/float64(count))
				*clientWaits[pid] = append(*clientWaits[pid], float64(ru.Nvcsw)/float64(count))
				b, err := benchout.ParseImgBench(r.Out)
				if err != nil {
					return 0, err
				}
				c1, err := procCPU(pid)
				if err != nil {
					return 0, err
				}
				*cpu[pid] = append(*cpu[pid], (c1-c0).Seconds()*1e6/float64(count))
				return b.IOPS(), nil
			}
		}
		for _, write := range []bool{false, true} {
			op := map[bool]string{false: "read", true: "write"}[write]
			for _, depth := range []int{1, 64} {
				for _, m := range []map[int]*[]float64{cpu, clientCPU, clientWaits} {
					*m[p.Pid], *m[q.Pid] = nil, nil
				}
				out, err := harness.Interleave(e.Reps, bench(mineURI, p.Pid, depth, write), bench(qsdURI, q.Pid, depth, write))
				if err != nil {
					t.Fatalf("%v", err)
				}
				rs := stats.Ratios(out[0], out[1])
				tb.Add(op, strconv.Itoa(depth), num(out[0]), num(out[1]), ratio(rs),
					num(*cpu[p.Pid]), num(*cpu[q.Pid]), ratio(stats.Ratios(*cpu[q.Pid], *cpu[p.Pid])),
					num(*clientCPU[p.Pid]), num(*clientCPU[q.Pid]), num(*clientWaits[p.Pid]), num(*clientWaits[q.Pid]))
				group := fmt.Sprintf("%s d=%d", op, depth)
				point(s, "nbd-4k", group, "minivmm export", out[0])
				point(s, "nbd-4k", group, "qemu-storage-daemon export", out[1])
				want := map[int]float64{1: 1, 64: 2}[depth]
				s.Targets = append(s.Targets, report.Check(
					fmt.Sprintf("NBD export 4 KiB %s depth %d: at least %gx qemu-storage-daemon", op, depth, want), med(rs), want, ratio(rs)))
			}
		}
		s.Charts = append(s.Charts, "nbd-4k.svg")
		if nbdcopy == "" {
			s.Note("nbdcopy: %s", harness.NotInstalled("nbdcopy (libnbd-bin)"))
			return
		}
		ct := s.Table("nbdcopy", "direction", "minivmm MiB/s", "qemu-storage-daemon MiB/s", "minivmm/qsd", "server CPU s minivmm", "qsd", "qsd/minivmm CPU")
		out := e.Path("nbd-out.raw")
		cp := func(pid int, from, to string) func() (float64, error) {
			return func() (float64, error) {
				os.Remove(out)
				c0, err := procCPU(pid)
				if err != nil {
					return 0, err
				}
				r, err := harness.Exec(nbdcopy, from, to)
				if err != nil {
					return 0, err
				}
				c1, err := procCPU(pid)
				if err != nil {
					return 0, err
				}
				*cpu[pid] = append(*cpu[pid], (c1 - c0).Seconds())
				return float64(size) / (1 << 20) / r.Wall.Seconds(), nil
			}
		}
		for _, dir := range []struct {
			name         string
			mine, theirs func() (float64, error)
		}{
			{"export to file", cp(p.Pid, mineURI, out), cp(q.Pid, qsdURI, out)},
			{"file to export", cp(p.Pid, src, mineURI), cp(q.Pid, src, qsdURI)},
		} {
			*cpu[p.Pid], *cpu[q.Pid] = nil, nil
			res, err := harness.Interleave(e.Reps, dir.mine, dir.theirs)
			if err != nil {
				t.Fatalf("%v", err)
			}
			rs := stats.Ratios(res[0], res[1])
			ct.Add(dir.name, num(res[0]), num(res[1]), ratio(rs), num(*cpu[p.Pid]), num(*cpu[q.Pid]), ratio(stats.Ratios(*cpu[q.Pid], *cpu[p.Pid])))
			s.Targets = append(s.Targets, report.Check(
				fmt.Sprintf("nbdcopy %s: at least as fast as qemu-storage-daemon", dir.name), med(rs), 1, ratio(rs)))
		}
		os.Remove(out)
	})
}

// procCPU is the user and system CPU time process pid has used
// (/proc/PID/stat, in clock ticks of 1/100 s).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields are
	// counted after its closing parenthesis (state is field 3).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, s := range f[11:13] { // utime, stime: fields 14 and 15
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %v", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// execUsage is harness.Exec with the tool's resource usage (CPU time,
// context switches).
func execUsage(name string, args ...string) (harness.Run, *syscall.Rusage, error) {
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r := harness.Run{Out: out.Bytes(), Wall: time.Since(start)}
	if err != nil {
		return r, nil, fmt.Errorf("%s: %v\n%s", harness.CommandLine(name, args...), err, bytes.TrimSpace(out.Bytes()))
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return r, nil, fmt.Errorf("%s: no resource usage", name)
	}
	return r, ru, nil
}
