package imgtool

// minivmm img bench: qemu-img bench over minivmm's block layer. depth
// goroutines each keep one request in flight over the node; request i
// goes to (offset + i*step) modulo the image size, as qemu-img's
// sequential pattern. Each goroutine reuses one buffer (aligned for
// cache=none), so a request allocates nothing.

import (
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"minivmm/block/engine"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["bench"] = imgCommand{run: runImgBench, noObject: true,
		usage: "bench [-c count] [-d depth] [-f fmt] [-n] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] [-add-fd fd=N,set=M] filename"}
}

func runImgBench(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	var format string
	count, depth := uint64(75000), uint64(64)
	var offset, step uint64
	bufSize := uint64(4096)
	pattern := byte(0)
	write, forceShare := false, false
	o := &qtool.OpenFlags{} // cache=writeback: qemu-img bench's default
	writethrough := false
	bad := func(what string, suffixes bool) bool {
		fmt.Fprintf(stderr, "%s: Invalid %s specified", e.prog, what)
		if suffixes {
			fmt.Fprintf(stderr, ". You may use k, M, G, T, P or E suffixes for\n"+
				"%s: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n", e.prog)
		} else {
			fmt.Fprintln(stderr)
		}
		return false
	}
	a, rc, ok := e.getopt(args, "c:d:f:ni:o:qs:S:t:wU", []qtool.LongOption{qtool.Opt("pattern", true, 'P'), qtool.Opt("force-share", false, 'U'), qtool.Opt("image-opts", false, 'I')}, func(c rune, arg string) bool {
		switch c {
		case 'I':
			o.ImageOpts = true
		case 'c':
			n, err := strconv.ParseUint(arg, 0, 31)
			if err != nil {
				return bad("request count", false)
			}
			count = n
		case 'd':
			n, err := strconv.ParseUint(arg, 0, 31)
			if err != nil || n == 0 {
				return bad("queue depth", false)
			}
			depth = n
		case 'f':
			format = arg
		case 'n':
			// As qemu-img bench's -n: aio=native (not cache=none), which
			// the file driver refuses without cache.direct.
			o.AIO = "native"
		case 'i':
			if arg != "threads" && arg != "native" && arg != "io_uring" {
				fmt.Fprintf(stderr, "%s: Invalid aio option: %s\n", e.prog, arg)
				return false
			}
			o.AIO = arg
		case 'o':
			n, err := cmdline.ParseSize(arg)
			if err != nil || n > 1<<63-1 {
				return bad("offset", true)
			}
			offset = n
		case 's':
			n, err := cmdline.ParseSize(arg)
			if err != nil || n > 1<<31-1 {
				return bad("buffer size", true)
			}
			bufSize = n
		case 'S':
			n, err := cmdline.ParseSize(arg)
			if err != nil || n > 1<<31-1 {
				return bad("step_size", true)
			}
			step = n
		case 't':
			wt, ok := o.SetCacheMode(arg)
			if !ok {
				fmt.Fprintf(stderr, "%s: Invalid cache mode\n", e.prog)
				return false
			}
			writethrough = wt
		case 'w':
			write = true
		case 'P':
			n, err := strconv.ParseUint(arg, 0, 64)
			if err != nil || n > 0xff {
				fmt.Fprintf(stderr, "%s: Invalid pattern byte specified\n", e.prog)
				return false
			}
			pattern = byte(n)
		case 'q':
			// Accepted, and (as qemu-img bench's) without effect.
		case 'U':
			forceShare = true
		}
		return true
	})
	if !ok {
		return rc
	}
	filename, ok := e.image(a)
	if !ok {
		return 1
	}
	if step == 0 {
		step = bufSize
	}
	s, ok := e.newSession(a.addFds)
	if !ok {
		return 1
	}
	defer s.close()
	o.File, o.Format, o.ReadOnly, o.ForceShare = filename, format, !write, forceShare
	o.Unmap = true
	node, err := s.open(o)
	if err != nil {
		fmt.Fprintf(stderr, "%s: Could not open '%s': %s\n", e.prog, filename, qtool.Message(err))
		return 1
	}
	size := uint64(node.Length())

	kind := "read"
	if write {
		kind = "write"
	}
	fmt.Fprintf(stdout, "Sending %d %s requests, %d bytes each, %d in parallel (starting at offset %d, step size %d)\n",
		count, kind, bufSize, depth, offset, step)

	// Request i's offset: offset for the first, then each step further,
	// taken modulo the image size (qemu-img's b->offset %= image_size).
	reqOffset := func(i uint64) int64 {
		if i == 0 || size == 0 {
			return int64(offset)
		}
		hi, lo := bits.Mul64(i, step)
		_, r := bits.Div64(hi%size, lo, size)
		r, carry := bits.Add64(r, offset%size, 0)
		if carry != 0 {
			r -= size
		}
		return int64(r % size)
	}

	var next atomic.Uint64
	var failOnce sync.Once
	var failErr error
	var wg sync.WaitGroup
	start := time.Now()
	for range min(depth, max(count, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := engine.AlignedBuffer(int(bufSize))
			if write {
				for i := range buf {
					buf[i] = pattern
				}
			}
			for {
				i := next.Add(1) - 1
				if i >= count {
					return
				}
				off := reqOffset(i)
				var err error
				if write {
					_, err = node.WriteAt(buf, off)
					if err == nil && writethrough {
						err = node.Flush()
					}
				} else {
					_, err = node.ReadAt(buf, off)
				}
				if err != nil {
					failOnce.Do(func() { failErr = err })
					next.Store(count)
					return
				}
			}
		}()
	}
	wg.Wait()
	if failErr != nil {
		fmt.Fprintf(stderr, "%s: Failed request: %s\n", e.prog, qtool.Strerror(failErr))
		return 1
	}
	elapsed := time.Since(start)
	if write {
		if err := node.Flush(); err != nil {
			fmt.Fprintf(stderr, "%s: Failed flush request: %s\n", e.prog, qtool.Message(err))
			return 1
		}
	}
	fmt.Fprintf(stdout, "Run completed in %3.3f seconds.\n", elapsed.Seconds())
	return 0
}
