package cases

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	qcow2reader "github.com/lima-vm/go-qcow2reader"
	"golang.org/x/sys/unix"

	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/bench/internal/stats"
	"minivmm/block"
	"minivmm/block/qcow2"
)

// readerAt is what the in-process read loops drive.
type readerAt interface {
	ReadAt(p []byte, off int64) (int, error)
}

// pread is a bare pread(2) loop on an fd: the cost without minivmm.
type pread int

func (f pread) ReadAt(p []byte, off int64) (int, error)  { return unix.Pread(int(f), p, off) }
func (f pread) WriteAt(p []byte, off int64) (int, error) { return unix.Pwrite(int(f), p, off) }

// seqReads reads n sequential 4 KiB blocks from r (wrapping at size) and
// returns the seconds taken.
func seqReads(r readerAt, n int, size int64) (float64, error) {
	buf := make([]byte, 4096)
	start := time.Now()
	for i := range n {
		if _, err := r.ReadAt(buf, int64(i)*4096%size); err != nil {
			return 0, err
		}
	}
	return time.Since(start).Seconds(), nil
}

// Qcow2Read compares sequential 4 KiB reads of one qcow2 through minivmm's
// block layer with raw reads of the same data, with go-qcow2reader on the
// same qcow2, and with a plain pread loop; and `img bench -d 1` on the
// qcow2 with `qemu-img bench -d 1`.
func Qcow2Read(e *harness.Env, s *report.Section) error {
	size, n := int64(1<<30), 200000
	if e.Quick {
		size, n = 256<<20, 50000
	}
	raw, qc := e.Path("read.raw"), e.Path("read.qcow2")
	if err := writePattern(raw, size); err != nil {
		return err
	}
	if err := toQcow2(e, raw, qc); err != nil {
		return err
	}
	g := newGraph()
	defer g.close()
	qn, err := g.open(imageOpts("qcow2", qc, true), false)
	if err != nil {
		return err
	}
	rn, err := g.open(imageOpts("raw", raw, true), false)
	if err != nil {
		return err
	}
	rf, err := os.Open(raw)
	if err != nil {
		return err
	}
	defer rf.Close()
	qf, err := os.Open(qc)
	if err != nil {
		return err
	}
	defer qf.Close()
	peer, peerErr := qcow2reader.Open(qf)
	if peerErr == nil {
		defer peer.Close()
	}
	names := []string{"minivmm qcow2", "minivmm raw", "plain pread of the raw file"}
	targets := []readerAt{qn, rn, pread(rf.Fd())}
	if peerErr == nil {
		names = append(names, "go-qcow2reader v0.7.1 qcow2")
		targets = append(targets, peer)
	}
	var fs []func() (float64, error)
	for _, r := range targets {
		fs = append(fs, func() (float64, error) { return seqReads(r, n, size) })
	}
	out, err := harness.Interleave(e.Reps, fs...)
	if err != nil {
		return err
	}
	s.Text = fmt.Sprintf("%d sequential 4 KiB reads at depth 1, in process, of a %d MiB qcow2 (every cluster allocated, 64 KiB clusters, "+
		"converted from the raw file with `minivmm img convert`) and of the raw file with the same data; the page cache holds both. "+
		"Each reader opened once; %d rounds, the readers alternating. Below, the same qcow2 through each tool's `bench -d 1`.",
		n, size>>20, e.Reps)
	s.Commands = []string{reportCmd(e, "qcow2-read"),
		fmt.Sprintf("minivmm img bench -c %d -d 1 -f qcow2 -s 4096 read.qcow2", n),
		fmt.Sprintf("qemu-img bench -c %d -d 1 -f qcow2 -s 4096 read.qcow2", n/5)}
	t := s.Table("In process:", "reader", "time", "per read", "ratio to minivmm qcow2 (per round)")
	for i := range names {
		t.Add(names[i], dur(out[i]), stats.Duration(med(out[i])/float64(n)), ratio(stats.Ratios(out[i], out[0])))
	}
	if peerErr != nil {
		s.Note("go-qcow2reader could not open the image: %v", peerErr)
	}
	prof := "profile: go test -run=NONE -bench='Layers/read/qcow2-file/depth=1$' -cpuprofile=cpu.prof ./bench/"
	qr := stats.Ratios(out[0], out[1])
	tg := report.CheckAtMost("qcow2 4 KiB reads within 1.3x of raw reads of the same data", med(qr), 1.3, ratio(qr)+" (qcow2 time / raw time)")
	if tg.Status == report.NotMet {
		tg.Note = prof
	}
	s.Targets = append(s.Targets, tg)
	if peerErr == nil {
		pr := stats.Ratios(out[3], out[0])
		tg := report.Check("qcow2 4 KiB reads at least as fast as go-qcow2reader's", med(pr), 1, ratio(pr)+" (go-qcow2reader time / minivmm time)")
		if tg.Status == report.NotMet {
			tg.Note = prof
		}
		s.Targets = append(s.Targets, tg)
	} else {
		s.Targets = append(s.Targets, report.Target{Goal: "qcow2 4 KiB reads at least as fast as go-qcow2reader's", Measured: "go-qcow2reader failed: " + peerErr.Error()})
	}
	// The tools on the same image; qemu-img, the slower, runs a fifth of
	// the requests.
	args := []string{"-c", strconv.Itoa(n / 5), "-d", "1", "-f", "qcow2", "-s", "4096", qc}
	mine, qemu, rs, err := imgBenchPair(e, e.Reps, args, n, nil)
	if err != nil {
		return err
	}
	t2 := toolTable(s, "As tools (req/s):")
	addToolRow(e, t2, mine, qemu, rs)
	return nil
}

// Layers times 4 KiB requests at depth 1 through each driver stack against
// a plain pread/pwrite loop on the same file.
func Layers(e *harness.Env, s *report.Section) error {
	const size = 64 << 20
	// Each layer has its own copy of the data, so that none writes into
	// pages another has dirtied, and every copy is written in 64 KiB
	// pieces (writePattern; img convert writes the qcow2 cluster by
	// cluster), so that the page cache holds them alike.
	raws := map[string]string{}
	for _, l := range []string{"floor", "file", "raw"} {
		raws[l] = e.Path("layers-" + l + ".raw")
		if err := writePattern(raws[l], size); err != nil {
			return err
		}
	}
	qc := e.Path("layers.qcow2")
	if err := toQcow2(e, raws["raw"], qc); err != nil {
		return err
	}
	fd, err := unix.Open(raws["floor"], unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	g := newGraph()
	defer g.close()
	type layer struct {
		name string
		t    interface {
			ReadAt([]byte, int64) (int, error)
			WriteAt([]byte, int64) (int, error)
		}
	}
	layers := []layer{{"pread/pwrite loop (floor)", pread(fd)}}
	for _, l := range []struct {
		name string
		o    block.Options
	}{
		{"null-co", block.Options{"driver": "null-co", "size": int64(size)}},
		{"file", block.Options{"driver": "file", "filename": raws["file"]}},
		{"raw over file", imageOpts("raw", raws["raw"], false)},
		{"qcow2 over file", imageOpts("qcow2", qc, false)},
	} {
		n, err := g.open(l.o, true)
		if err != nil {
			return fmt.Errorf("%s: %v", l.name, err)
		}
		layers = append(layers, layer{l.name, n})
	}
	target := 200 * time.Millisecond
	if e.Quick {
		target = 40 * time.Millisecond
	}
	s.Text = fmt.Sprintf("4 KiB sequential requests at depth 1, in process, each layer on its own copy of a %d MiB file filled with data in 64 KiB writes (the qcow2: made by `minivmm img convert`, "+
		"every cluster allocated; writes overwrite): each layer opened once, read-write with a writer attached; about %v of requests per "+
		"measurement, %d rounds, the layers alternating. The ratio is the layer's time per request over the floor's in the same round. "+
		"QEMU's layers cannot be called in process; the img bench case compares whole stacks with QEMU.",
		size>>20, target, e.Reps)
	s.Commands = []string{reportCmd(e, "layers"), "go test -run=NONE -bench=Layers ./bench/"}
	t := s.Table("", "op", "layer", "per request", "ratio to the floor")
	for _, write := range []bool{false, true} {
		op := map[bool]string{false: "read", true: "write"}[write]
		var fs []func() (float64, error)
		for _, l := range layers {
			buf := make([]byte, 4096)
			for i := range buf {
				buf[i] = 0xa5
			}
			var i int64
			f := func() error {
				off := i * 4096 % size
				i++
				var err error
				if write {
					_, err = l.t.WriteAt(buf, off)
				} else {
					_, err = l.t.ReadAt(buf, off)
				}
				return err
			}
			n, err := harness.Calibrate(target, f)
			if err != nil {
				return fmt.Errorf("%s %s: %v", op, l.name, err)
			}
			fs = append(fs, func() (float64, error) { return harness.PerOp(n, f) })
		}
		out, err := harness.Interleave(e.Reps, fs...)
		if err != nil {
			return err
		}
		for i, l := range layers {
			t.Add(op, l.name, dur(out[i]), ratio(stats.Ratios(out[i], out[0])))
		}
	}
	s.Note("How a file was filled matters to the write rows: on this kernel a 4 KiB pwrite into a file written in 1 MiB pieces " +
		"costs 2-3x one into a file written in 64 KiB pieces (page-cache folio size), so every file here is written in 64 KiB pieces.")
	return nil
}

// Sparse reads 4 KiB blocks of a 1 TiB qcow2 with one 64 KiB cluster
// written every 1 GiB (so every allocated place has its own L2 table):
// in process at random places (allocated ones, and anywhere), against
// re-reading one cluster (every lookup a cache hit); and as tools, `img
// bench` with a step of the spacing, minivmm's and qemu-img's.
func Sparse(e *harness.Env, s *report.Section) error {
	const vsize = int64(1) << 40
	// The spacing is also the tools' -S, which qemu-img bench takes up to
	// 2^31-1.
	spacing, reads := int64(1)<<30, 20000
	if e.Quick {
		reads = 5000
	}
	places := vsize / spacing
	qc := e.Path("sparse.qcow2")
	if err := createQcow2(qc, qcow2.CreateOptions{Size: uint64(vsize)}); err != nil {
		return err
	}
	g := newGraph()
	defer func() { g.close() }() // the graph g is when the case returns
	w, err := g.open(imageOpts("qcow2", qc, false), true)
	if err != nil {
		return err
	}
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i + 1)
	}
	allocStart := time.Now()
	for p := range places {
		if _, err := w.WriteAt(buf, p*spacing); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	allocT := time.Since(allocStart)
	g.close()
	g = newGraph()
	n, err := g.open(imageOpts("qcow2", qc, true), false)
	if err != nil {
		return err
	}
	rd := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	loop := func(off func() int64) func() (float64, error) {
		return func() (float64, error) {
			start := time.Now()
			for range reads {
				if _, err := n.ReadAt(rd, off()); err != nil {
					return 0, err
				}
			}
			return time.Since(start).Seconds() / float64(reads), nil
		}
	}
	allocated := loop(func() int64 { return rng.Int64N(places)*spacing + rng.Int64N(16)*4096 })
	anywhere := loop(func() int64 { return rng.Int64N(vsize/4096) * 4096 })
	hot := loop(func() int64 { return rng.Int64N(16) * 4096 })
	out, err := harness.Interleave(e.Reps, hot, allocated, anywhere)
	if err != nil {
		return err
	}
	s.Text = fmt.Sprintf("A 1 TiB qcow2 (64 KiB clusters, default cache sizes) with a 64 KiB cluster written every %d GiB: %d allocated places, "+
		"each under its own L2 table (%s of L2 tables in all); writing them took %s in process. "+
		"In process, %d random 4 KiB reads per measurement, %d rounds.",
		spacing>>30, places, stats.Bytes(float64(places*64<<10)), stats.Duration(allocT.Seconds()), reads, e.Reps)
	cycles := 4
	if e.Quick {
		cycles = 2
	}
	cnt := int(places) * cycles
	s.Commands = []string{reportCmd(e, "sparse"),
		fmt.Sprintf("minivmm img bench -c %d -d 1 -f qcow2 -s 4096 -S %d sparse.qcow2", cnt, spacing),
		fmt.Sprintf("qemu-img bench -c %d -d 1 -f qcow2 -s 4096 -S %d sparse.qcow2", cnt, spacing)}
	t := s.Table("In process:", "reads", "per read", "ratio to one hot cluster")
	for i, name := range []string{"one allocated cluster, again and again (L2 cache hit)", "random allocated places (a different L2 table each time)", "random anywhere in 1 TiB (mostly unallocated)"} {
		t.Add(name, dur(out[i]), ratio(stats.Ratios(out[i], out[0])))
	}
	// The tools: step = spacing, so request i reads allocated place i mod
	// places: every request needs a different L2 table, cycling 4 times.
	args := []string{"-c", strconv.Itoa(cnt), "-d", "1", "-f", "qcow2", "-s", "4096", "-S", strconv.FormatInt(spacing, 10), qc}
	mine, qemu, rs, err := imgBenchPair(e, e.Reps, args, 0, nil)
	if err != nil {
		return err
	}
	t2 := toolTable(s, fmt.Sprintf("As tools, `bench -S %d` (each request on the next allocated place, %d cycles over all L2 tables), req/s:", spacing, cycles))
	addToolRow(e, t2, mine, qemu, rs)
	return nil
}

// FirstWrite writes a fresh, empty qcow2 from start to end in 64 KiB
// requests (every write allocates a cluster), against the same writes to
// a fresh sparse raw file, in process; and `img bench -w -s 65536` on a
// fresh qcow2, minivmm's and qemu-img's.
func FirstWrite(e *harness.Env, s *report.Section) error {
	size := int64(64 << 20)
	if e.Quick {
		size = 16 << 20
	}
	const io = 64 << 10
	qc, raw := e.Path("fresh.qcow2"), e.Path("fresh.raw")
	buf := make([]byte, io)
	for i := range buf {
		buf[i] = byte(i*13 + 1)
	}
	writeAll := func(format, path string) (float64, error) {
		os.Remove(path)
		if format == "qcow2" {
			if err := createQcow2(path, qcow2.CreateOptions{Size: uint64(size)}); err != nil {
				return 0, err
			}
		} else if err := os.WriteFile(path, nil, 0o600); err != nil {
			return 0, err
		} else if err := os.Truncate(path, size); err != nil {
			return 0, err
		}
		g := newGraph()
		defer g.close()
		n, err := g.open(imageOpts(format, path, false), true)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		for off := int64(0); off < size; off += io {
			if _, err := n.WriteAt(buf, off); err != nil {
				return 0, err
			}
		}
		if err := n.Flush(); err != nil {
			return 0, err
		}
		return time.Since(start).Seconds(), nil
	}
	out, err := harness.Interleave(e.Reps,
		func() (float64, error) { return writeAll("qcow2", qc) },
		func() (float64, error) { return writeAll("raw", raw) })
	if err != nil {
		return err
	}
	mb := float64(size) / 1e6
	s.Text = fmt.Sprintf("In process: %d MiB written in sequential 64 KiB requests at depth 1, then one Flush (fsync), to a fresh empty qcow2 "+
		"(64 KiB clusters: every write allocates a cluster, and L2 tables and refcount blocks as it goes) and to a fresh sparse raw file; "+
		"images created outside the timing; %d rounds, alternating. As tools: `bench -w -s 65536` over a fresh qcow2 made for each run.",
		size>>20, e.Reps)
	cnt := int(size / io)
	s.Commands = []string{reportCmd(e, "first-write"),
		fmt.Sprintf("minivmm img bench -w --pattern=165 -c %d -d 1 -f qcow2 -s 65536 fresh.qcow2", cnt),
		fmt.Sprintf("qemu-img bench -w --pattern=165 -c %d -d 1 -f qcow2 -s 65536 fresh.qcow2", cnt)}
	t := s.Table("In process:", "image", "time (writes + flush)", "MB/s", "qcow2 time / raw time")
	t.Add("fresh qcow2", dur(out[0]), num(scale(inv(out[0]), mb)), ratio(stats.Ratios(out[0], out[1])))
	t.Add("fresh sparse raw", dur(out[1]), num(scale(inv(out[1]), mb)), "")
	tq := e.Path("fresh-tool.qcow2")
	prepare := func() error {
		os.Remove(tq)
		return createQcow2(tq, qcow2.CreateOptions{Size: uint64(size)})
	}
	args := []string{"-w", "--pattern=165", "-c", strconv.Itoa(cnt), "-d", "1", "-f", "qcow2", "-s", "65536", tq}
	mine, qemu, rs, err := imgBenchPair(e, e.Reps, args, 0, prepare)
	if err != nil {
		return err
	}
	t2 := toolTable(s, "As tools, allocating writes (req/s):")
	addToolRow(e, t2, mine, qemu, rs)
	s.Note("To see what each tool asks of the kernel per allocating write (data and metadata writes, flushes): " +
		"`strace -f -c -e trace=pwrite64,pwritev,fdatasync,fsync <tool> bench -w -c 256 -d 1 -s 65536 -f qcow2 fresh.qcow2`.")
	return nil
}

// Compressed reads a compressed qcow2 (zlib and zstd) whole: in process
// through the block layer, and as `img convert -O raw` of the image,
// minivmm's and qemu-img's.
func Compressed(e *harness.Env, s *report.Section) error {
	size := int64(64 << 20)
	if e.Quick {
		size = 16 << 20
	}
	src := e.Path("comp-src.raw")
	if err := writeText(src, size); err != nil {
		return err
	}
	s.Text = fmt.Sprintf("%d MiB of compressible text, compressed with `minivmm img convert -c -O qcow2 -o compression_type=T` "+
		"(every cluster compressed). In process: open the image read-only and read it from start to end in 64 KiB requests. "+
		"As tools: `img convert -f qcow2 -O raw` of the image to a new file (start-up, decompression, the page-cache write of the output), "+
		"minivmm's and qemu-img's with the same arguments; %d rounds, alternating. MB/s of virtual size.", size>>20, e.Reps)
	s.Commands = []string{reportCmd(e, "compressed"),
		"minivmm img convert -f qcow2 -O raw comp-T.qcow2 out.raw", "qemu-img convert -f qcow2 -O raw comp-T.qcow2 out.raw"}
	t := s.Table("", "compression", "in process MB/s", "minivmm img convert MB/s", "qemu-img convert MB/s", "minivmm/qemu-img (convert)", "in process / qemu-img convert")
	mb := float64(size) / 1e6
	for _, ctype := range []string{"zlib", "zstd"} {
		img := e.Path("comp-" + ctype + ".qcow2")
		if err := toQcow2(e, src, img, "-c", "-o", "compression_type="+ctype); err != nil {
			return err
		}
		inproc := func() (float64, error) {
			g := newGraph()
			defer g.close()
			buf := make([]byte, 64<<10)
			start := time.Now()
			n, err := g.open(imageOpts("qcow2", img, true), false)
			if err != nil {
				return 0, err
			}
			for off := int64(0); off < size; off += int64(len(buf)) {
				if _, err := n.ReadAt(buf, off); err != nil {
					return 0, err
				}
			}
			return time.Since(start).Seconds(), nil
		}
		out := e.Path("comp-out.raw")
		tool := func(bin string, pre ...string) func() (float64, error) {
			return func() (float64, error) {
				os.Remove(out)
				defer os.Remove(out)
				r, err := harness.Exec(bin, append(pre, "convert", "-f", "qcow2", "-O", "raw", img, out)...)
				return r.Wall.Seconds(), err
			}
		}
		fs := []func() (float64, error){inproc, tool(e.Minivmm, "img")}
		if e.QemuImg != "" {
			fs = append(fs, tool(e.QemuImg))
		}
		res, err := harness.Interleave(e.Reps, fs...)
		if err != nil {
			return err
		}
		q, r1, r2 := harness.NotInstalled("qemu-img"), "–", "–"
		if e.QemuImg != "" {
			q = num(scale(inv(res[2]), mb))
			r1, r2 = ratio(stats.Ratios(res[2], res[1])), ratio(stats.Ratios(res[2], res[0]))
		}
		t.Add(ctype, num(scale(inv(res[0]), mb)), num(scale(inv(res[1]), mb)), q, r1, r2)
	}
	s.Note("Ratios are qemu-img's time over minivmm's in the same round (above 1: minivmm is faster).")
	return nil
}

// writeText writes size bytes of text-like, compressible data.
func writeText(path string, size int64) error {
	b := make([]byte, 0, size+128)
	for i := 0; int64(len(b)) < size; i++ {
		b = fmt.Appendf(b, "line %08d: the quick brown fox jumps over the lazy dog %d\n", i, i%97)
	}
	return os.WriteFile(path, b[:size], 0o600)
}
