// Package cases are the performance report's cases. Each fills in a
// report.Section: in-process cases call the block and qemuopen packages
// directly; tool cases run the minivmm binary and, where installed, QEMU's
// tools on the same input in the same run. A case returns an error only
// when it cannot run; a slow figure is never an error.
package cases

import (
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"

	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/bench/internal/stats"
	"minivmm/block"
	_ "minivmm/block/drivers" // file, raw, null-co, qcow2
	"minivmm/block/qcow2"
	"minivmm/qemuopen"
)

// Case is one runnable part of the report.
type Case struct {
	ID    string // for -run
	Title string
	Run   func(e *harness.Env, s *report.Section) error
}

// All is every case, in report order.
func All() []Case {
	return []Case{
		{"open", "Open: qemu_open of an fdset vs dup and open(2)", Open},
		{"blockdev-add", "Open: QMP blockdev-add of raw and qcow2 over fdsets", BlockdevAdd},
		{"chain", "Open: qcow2 backing chains of depth 1 to 1000", Chain},
		{"reopen", "Reopen: read-only <-> read-write over an fdset", Reopen},
		{"img-bench", "IO path: img bench vs qemu-img bench", ImgBench},
		{"qcow2-read", "IO path: qcow2 reads vs raw and go-qcow2reader", Qcow2Read},
		{"layers", "IO path: each layer's cost vs a plain pread/pwrite loop", Layers},
		{"aio-modes", "IO path: aio=threads vs native vs io_uring, 4 KiB random O_DIRECT", AIOModes},
		{"sparse", "IO path: 4 KiB reads over a 1 TiB sparse qcow2 (metadata cache)", Sparse},
		{"first-write", "IO path: first-write allocation", FirstWrite},
		{"compressed", "IO path: compressed reads (zlib, zstd)", Compressed},
		{"memory", "Memory: a VMM holding 1, 10 and 100 qcow2 nodes", Memory},
		{"jobs", "Block jobs: commit and stream throughput (speed 0)", Jobs},
		{"mirror", "Block jobs: mirror and active commit, copy and switch (speed 0)", Mirror},
		{"vhost-user", "Guest IO path: vhost-user-blk export vs qemu-storage-daemon, and the device model's cost", VhostUser},
		{"nbd", "NBD: minivmm's export vs qemu-storage-daemon's (qemu-img bench, nbdcopy)", NBD},
	}
}

// reportCmd is the command that reproduces one case's figures.
func reportCmd(e *harness.Env, id string) string {
	q := ""
	if e.Quick {
		q = " -quick"
	}
	return fmt.Sprintf("go run ./bench/cmd/report%s -run '^%s$' -o DIR", q, id)
}

// graph is a block graph with its fd registry.
type graph struct {
	reg *qemuopen.Registry
	g   *block.Graph
}

func newGraph() *graph {
	reg := qemuopen.New(qemuopen.Config{})
	return &graph{reg: reg, g: block.NewGraph(reg)}
}

func (g *graph) close() { g.g.Close(); g.reg.CloseAll() }

// open adds o; with write, it attaches a writer as a device would.
func (g *graph) open(o block.Options, write bool) (*block.Node, error) {
	n, err := g.g.Add(o)
	if err != nil {
		return nil, err
	}
	if write {
		if _, err := g.g.Attach("", n, block.Perm{Write: true}); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// imageOpts is format over a file node on path.
func imageOpts(format, path string, readOnly bool) block.Options {
	return block.Options{"driver": format, "read-only": readOnly,
		"file": block.Options{"driver": "file", "filename": path}}
}

// writeChunk is the size of writePattern's writes.
const writeChunk = 64 << 10

// writePattern writes size bytes of data with no zero byte, each megabyte
// different from the last.
func writePattern(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		for i := range buf {
			buf[i] = byte((int64(i)*7+off>>20)%255 + 1)
		}
		n := min(int64(len(buf)), size-off)
		// 64 KiB writes, as img convert writes a qcow2's clusters: the
		// size of the writes that fill a file sets the size of its
		// page-cache folios, and a later 4 KiB overwrite costs 2-3x more
		// in a file written in 1 MiB pieces (kernel 6.18, ext4).
		for o := int64(0); o < n; o += writeChunk {
			if _, err := f.WriteAt(buf[o:min(o+writeChunk, n)], off+o); err != nil {
				f.Close()
				return err
			}
		}
	}
	return f.Close()
}

// createQcow2 lays out an empty qcow2 at path in process.
func createQcow2(path string, o qcow2.CreateOptions) error {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	err = qcow2.Create(qcow2.FdTarget(fd), o)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// toQcow2 converts raw to a fully allocated qcow2 with `minivmm img
// convert` (not QEMU, so that the input exists without it).
func toQcow2(e *harness.Env, raw, dst string, extra ...string) error {
	args := append([]string{"img", "convert", "-f", "raw", "-O", "qcow2"}, extra...)
	_, err := harness.Exec(e.Minivmm, append(args, raw, dst)...)
	return err
}

// sum formats a summary of seconds as a duration, with the spread.
func dur(xs []float64) string { return stats.Summarize(xs).Format(stats.Duration) }

// num formats a summary of plain numbers (rates).
func num(xs []float64) string { return stats.Summarize(xs).Format(stats.Num) }

// ratio formats a summary of ratios.
func ratio(xs []float64) string { return stats.Summarize(xs).Format(stats.Ratio) }

// med is the median of xs.
func med(xs []float64) float64 { return stats.Summarize(xs).Median }

// point adds a chart point from samples.
func point(s *report.Section, chart, group, series string, xs []float64) {
	sm := stats.Summarize(xs)
	if sm.N == 0 {
		return
	}
	s.Point(chart, group, series, sm.Median, sm.Min, sm.Max)
}

// inv is 1/x for each x (a time per op into a rate, a ratio turned over).
func inv(xs []float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = 1 / x
		if x == 0 {
			out[i] = math.NaN()
		}
	}
	return out
}

// scale is k*x for each x.
func scale(xs []float64, k float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = k * x
	}
	return out
}
