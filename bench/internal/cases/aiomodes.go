package cases

import (
	"fmt"
	"math/rand"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"minivmm/bench/internal/benchout"
	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/bench/internal/stats"
	"minivmm/block"
)

var aioModes = []string{"threads", "native", "io_uring"}

// AIOModes compares the file driver's aio modes: 4 KiB random O_DIRECT
// reads and writes through a file node, at depth 1 and 32 (depth
// goroutines each waiting for its own request, as the aio pool's workers
// do), each mode against threads in the same round; and qemu-img bench
// -t none -i MODE on the same file, for QEMU's own ratios between its modes.
func AIOModes(e *harness.Env, s *report.Section) error {
	size, ops, qops := int64(256<<20), 20000, 20000
	if e.Quick {
		size, ops, qops = 64<<20, 4000, 4000
	}
	path := e.Path("aio.raw")
	if err := writePattern(path, size); err != nil {
		return err
	}
	s.Text = fmt.Sprintf("A %d MiB raw file, opened with cache.direct=on (O_DIRECT) through a file node with aio=threads, native "+
		"(Linux AIO) or io_uring. %d requests of 4 KiB at random aligned offsets per measurement, spread over DEPTH goroutines "+
		"that each wait for their own request; %d rounds, the modes alternating within a round; the ratio is the mode's req/s "+
		"over threads' in the same round. qemu-img bench (sequential, its only pattern) runs -t none -i MODE on the same file, "+
		"for QEMU's own native/threads and io_uring/threads ratios.", size>>20, ops, e.Reps)
	s.Commands = []string{reportCmd(e, "aio-modes"),
		fmt.Sprintf("qemu-img bench -c %d -d DEPTH -t none -i MODE -f raw -s 4096 [-w --pattern=165] %s", qops, "IMAGE")}
	t := s.Table("", "op", "depth", "mode", "minivmm req/s", "mode/threads", "qemu-img bench req/s", "qemu mode/threads")
	for _, write := range []bool{false, true} {
		op := map[bool]string{false: "read", true: "write"}[write]
		for _, depth := range []int{1, 32} {
			var fs []func() (float64, error)
			for _, mode := range aioModes {
				fs = append(fs, func() (float64, error) { return aioModeRun(path, mode, write, depth, ops, size) })
			}
			mine, err := harness.Interleave(e.Reps, fs...)
			if err != nil {
				return err
			}
			var qemu [][]float64
			if e.QemuImg != "" {
				var qfs []func() (float64, error)
				for _, mode := range aioModes {
					args := []string{"bench", "-c", strconv.Itoa(qops), "-d", strconv.Itoa(depth), "-t", "none", "-i", mode, "-f", "raw", "-s", "4096"}
					if write {
						args = append(args, "-w", "--pattern=165")
					}
					args = append(args, path)
					qfs = append(qfs, func() (float64, error) {
						r, err := harness.Exec(e.QemuImg, args...)
						if err != nil {
							return 0, err
						}
						b, err := benchout.ParseImgBench(r.Out)
						if err != nil {
							return 0, fmt.Errorf("%s: %v", harness.CommandLine(e.QemuImg, args...), err)
						}
						return b.IOPS(), nil
					})
				}
				if qemu, err = harness.Interleave(e.Reps, qfs...); err != nil {
					return err
				}
			}
			for i, mode := range aioModes {
				rel, q, qrel := "1", harness.NotInstalled("qemu-img"), "–"
				if i > 0 {
					rel = ratio(stats.Ratios(mine[i], mine[0]))
				}
				if qemu != nil {
					q, qrel = num(qemu[i]), "1"
					if i > 0 {
						qrel = ratio(stats.Ratios(qemu[i], qemu[0]))
					}
				}
				t.Add(op, strconv.Itoa(depth), mode, num(mine[i]), rel, q, qrel)
				point(s, "aio-modes", fmt.Sprintf("%s d=%d", op, depth), mode, mine[i])
			}
		}
	}
	// Like for like: both tools' bench, same arguments, mode by mode.
	tt := s.Table("minivmm img bench vs qemu-img bench, -t none -i MODE (sequential 4 KiB)", "op", "depth", "mode",
		"minivmm img bench req/s", "qemu-img bench req/s", "minivmm/qemu-img")
	for _, write := range []bool{false, true} {
		op := map[bool]string{false: "read", true: "write"}[write]
		for _, depth := range []int{1, 32} {
			for _, mode := range aioModes {
				args := []string{"-c", strconv.Itoa(qops), "-d", strconv.Itoa(depth), "-t", "none", "-i", mode, "-f", "raw", "-s", "4096"}
				if write {
					args = append(args, "-w", "--pattern=165")
				}
				mine, qemu, rs, err := imgBenchPair(e, e.Reps, append(args, path), 0, nil)
				if err != nil {
					return err
				}
				q, r := harness.NotInstalled("qemu-img"), "–"
				if e.QemuImg != "" {
					q, r = num(qemu), ratio(rs)
				}
				tt.Add(op, strconv.Itoa(depth), mode, num(mine), q, r)
			}
		}
	}
	s.Commands = append(s.Commands, fmt.Sprintf("minivmm img bench -c %d -d DEPTH -t none -i MODE -f raw -s 4096 [-w --pattern=165] IMAGE", qops))
	s.Charts = append(s.Charts, "aio-modes.svg")
	return nil
}

// aioModeRun opens path with aio=mode and O_DIRECT and returns the req/s
// of ops random 4 KiB requests spread over depth goroutines.
func aioModeRun(path, mode string, write bool, depth, ops int, size int64) (float64, error) {
	g := newGraph()
	defer g.close()
	n, err := g.open(block.Options{"driver": "file", "filename": path, "aio": mode,
		"cache": block.Options{"direct": true}}, write)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	errs := make(chan error, depth)
	start := time.Now()
	for w := range depth {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			buf := alignedBlock(4096)
			for i := range buf {
				buf[i] = 165
			}
			for i := w; i < ops; i += depth {
				off := rng.Int63n(size/4096) * 4096
				var err error
				if write {
					_, err = n.WriteAt(buf, off)
				} else {
					_, err = n.ReadAt(buf, off)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(ops) / elapsed.Seconds(), nil
}

// alignedBlock is n bytes at an address O_DIRECT takes as it is.
func alignedBlock(n int) []byte {
	raw := make([]byte, n+4096)
	shift := (4096 - int(uintptr(unsafe.Pointer(&raw[0])))%4096) % 4096
	return raw[shift : shift+n]
}
