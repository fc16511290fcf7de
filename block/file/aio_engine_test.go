package file

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

// engines are the kernel interfaces under test, each made fresh.
var engineModes = []string{"native", "io_uring"}

// needEngine skips the test where the kernel or a sandbox refuses the
// mode (a container's seccomp profile often refuses io_uring), saying so.
func needEngine(t *testing.T, mode string) {
	t.Helper()
	if mode == "threads" {
		return
	}
	eng, err := newEngine(mode, 0, engineHooks{})
	var se *SetupError
	if errors.As(err, &se) && (se.Errno == unix.EPERM || se.Errno == unix.ENOSYS) {
		t.Skipf("this kernel refuses aio=%s here: %v", mode, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	eng.close()
}

func openDirect(t *testing.T, size int) (int, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("O_DIRECT not available here: %v", err)
	}
	return fd, p
}

// TestEngineShadow: many goroutines read and write random aligned blocks
// (vectored, some FUA, with flushes) through each engine; every read
// matches a shadow copy kept under per-block locks, and the file ends up
// as the shadow says.
func TestEngineShadow(t *testing.T) {
	for _, mode := range engineModes {
		t.Run(mode, func(t *testing.T) {
			needEngine(t, mode)
			fdtest.Check(t)
			const bs, blocks = 4096, 64
			fd, p := openDirect(t, bs*blocks)
			defer unix.Close(fd)
			eng, err := newEngine(mode, 0, engineHooks{})
			if err != nil {
				t.Fatal(err)
			}
			shadow := make([]byte, bs*blocks)
			locks := make([]sync.Mutex, blocks)
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for g := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewSource(int64(g)))
					buf := alignedBuffer(2*bs, bs)
					for range 200 {
						b := rng.Intn(blocks - 1)
						n := 1 + rng.Intn(2)
						if b+n > blocks {
							n = 1
						}
						for i := b; i < b+n; i++ {
							locks[i].Lock()
						}
						data := buf[:n*bs]
						// Two pieces at one offset: a vectored request.
						vec := [][]byte{data[:bs], data[bs:]}
						switch rng.Intn(4) {
						case 0, 1:
							rng.Read(data)
							if err := eng.writev(fd, vec, int64(b*bs), rng.Intn(4) == 0); err != nil {
								errs <- err
							}
							copy(shadow[b*bs:], data)
						case 2:
							clear(data)
							if err := eng.readv(fd, vec, int64(b*bs)); err != nil {
								errs <- err
							} else if !bytes.Equal(data, shadow[b*bs:(b+n)*bs]) {
								t.Errorf("read at block %d differs from the shadow", b)
							}
						case 3:
							if err := eng.fdatasync(fd); err != nil {
								errs <- err
							}
						}
						for i := b; i < b+n; i++ {
							locks[i].Unlock()
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if err := eng.close(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, shadow) {
				t.Error("file differs from the shadow")
			}
		})
	}
}

// goroutines waits (briefly) for the goroutine count to fall back to
// want, and reports what it settled at.
func goroutinesSettle(want int) int {
	n := runtime.NumGoroutine()
	for i := 0; i < 200 && n > want; i++ {
		time.Sleep(5 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}

// TestEngineSetupFailure: a kernel (or sandbox) that refuses io_uring or
// Linux AIO fails the open with QEMU's words, leaving no fd, lock or
// goroutine behind.
func TestEngineSetupFailure(t *testing.T) {
	for _, tc := range []struct {
		mode  string
		hooks engineHooks
		want  string
	}{
		{"io_uring", engineHooks{uring: uringSys{setup: func(uint32, *uringParams) (int, error) { return -1, unix.EPERM }}},
			"Unable to use io_uring: failed to init linux io_uring ring: Operation not permitted"},
		{"io_uring", engineHooks{uring: uringSys{setup: func(uint32, *uringParams) (int, error) { return -1, unix.ENOSYS }}},
			"Unable to use io_uring: failed to init linux io_uring ring: Function not implemented"},
		{"native", engineHooks{laio: laioSys{setup: func(int, *uint64) error { return unix.EAGAIN }}},
			"Unable to use native AIO: failed to create linux AIO context: Resource temporarily unavailable"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			fdtest.Check(t)
			base := runtime.NumGoroutine()
			p := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(p, make([]byte, 4096), 0o600); err != nil {
				t.Fatal(err)
			}
			reg := qemuopen.New(qemuopen.Config{})
			defer reg.CloseAll()
			o := &block.OpenContext{Options: block.Options{"filename": p, "aio": tc.mode}, Writable: true, Direct: true, Files: reg}
			img, err := openWith(o, tc.hooks)
			if err == nil {
				img.Close()
				t.Fatal("opened")
			}
			var se *SetupError
			if err.Error() != tc.want || !errors.As(err, &se) {
				t.Errorf("%q, want %q", err, tc.want)
			}
			// The file is free again: a writer takes its lock.
			img, err = openWith(o, engineHooks{})
			if err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if n := goroutinesSettle(base); n > base {
				t.Errorf("%d goroutines, %d before", n, base)
			}
		})
	}
}

// TestEngineSubmitFaults: submissions the kernel refuses fail their own
// requests with its errno (Linux AIO: the first of a batch, as QEMU's
// ioq_submit; io_uring: what it did not take), EINTR and EAGAIN are
// retried, and the engine goes on working and closes cleanly.
func TestEngineSubmitFaults(t *testing.T) {
	for _, mode := range engineModes {
		for _, fault := range []unix.Errno{unix.EIO, unix.EINTR, unix.EAGAIN} {
			t.Run(mode+"/"+fault.Error(), func(t *testing.T) {
				needEngine(t, mode)
				fdtest.Check(t)
				base := runtime.NumGoroutine()
				fd, _ := openDirect(t, 64<<10)
				defer unix.Close(fd)
				var faults atomic.Int32
				faults.Store(3)
				fail := func() bool { return faults.Add(-1) >= 0 }
				var h engineHooks
				h.uring.enter = func(fd int, toSubmit, minComplete, flags uint32) (int, error) {
					if toSubmit > 0 && fail() {
						return 0, fault
					}
					return realUringEnter(fd, toSubmit, minComplete, flags)
				}
				h.laio.submit = func(ctx uint64, cbs []*iocb) (int, error) {
					if fail() {
						return 0, fault
					}
					return realIOSubmit(ctx, cbs)
				}
				eng, err := newEngine(mode, 2, h)
				if err != nil {
					t.Fatal(err)
				}
				buf := alignedBuffer(4096, 4096)
				var failed int
				for i := range 8 {
					for j := range buf {
						buf[j] = byte(i)
					}
					err := eng.writev(fd, [][]byte{buf}, int64(i)*4096, false)
					if err != nil {
						if err != fault {
							t.Errorf("write %d: %v, want %v", i, err, fault)
						}
						failed++
						continue
					}
					clear(buf)
					if err := eng.readv(fd, [][]byte{buf}, int64(i)*4096); err != nil || buf[0] != byte(i) || buf[4095] != byte(i) {
						t.Errorf("read %d: %v %d", i, err, buf[0])
					}
				}
				want := 0
				if fault == unix.EIO {
					want = 1 // each refused submission fails the one request it held
				}
				if fault == unix.EIO && failed == 0 || fault != unix.EIO && failed != 0 {
					t.Errorf("%d requests failed with %v injected (want some: %v)", failed, fault, want == 1)
				}
				if err := eng.close(); err != nil {
					t.Fatal(err)
				}
				if n := goroutinesSettle(base); n > base {
					t.Errorf("%d goroutines, %d before", n, base)
				}
			})
		}
	}
}

// TestEngineShortRead: a read reaching past the end of the file (whose
// size is not a multiple of the block: O_DIRECT stops at the end) gets
// the file's bytes then zeroes, from either engine, direct or not.
func TestEngineShortRead(t *testing.T) {
	for _, mode := range engineModes {
		t.Run(mode, func(t *testing.T) {
			needEngine(t, mode)
			fdtest.Check(t)
			p := filepath.Join(t.TempDir(), "disk.img")
			data := bytes.Repeat([]byte{0x5a}, 4096+100)
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, flags := range []int{unix.O_RDONLY, unix.O_RDONLY | unix.O_DIRECT} {
				fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				eng, err := newEngine(mode, 0, engineHooks{})
				if err != nil {
					t.Fatal(err)
				}
				buf := alignedBuffer(3*4096, 4096)
				for i := range buf {
					buf[i] = 0xff
				}
				if err := eng.readv(fd, [][]byte{buf[:4096], buf[4096:]}, 0); err != nil {
					t.Errorf("flags %#x: %v", flags, err)
				}
				want := append(data, make([]byte, len(buf)-len(data))...)
				if !bytes.Equal(buf, want) {
					t.Errorf("flags %#x: read %x... at 4096", flags, buf[4096:4096+120])
				}
				eng.close()
				unix.Close(fd)
			}
		})
	}
}

// TestAIOModesThroughGraph: each aio mode, through the block layer
// (the file node opened by path, or from an fdset): vectored and
// FUA writes, reads, flushes from concurrent goroutines; after close the
// ring's fd (io_uring) is gone with the image's, as are the reaper
// goroutines.
func TestAIOModesThroughGraph(t *testing.T) {
	for _, mode := range []string{"threads", "native", "io_uring"} {
		for _, fdset := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/fdset=%v", mode, fdset), func(t *testing.T) {
				needEngine(t, mode)
				fdtest.Check(t)
				base := runtime.NumGoroutine()
				p := filepath.Join(t.TempDir(), "disk.img")
				if err := os.WriteFile(p, make([]byte, 1<<20), 0o600); err != nil {
					t.Fatal(err)
				}
				reg := qemuopen.New(qemuopen.Config{})
				defer reg.CloseAll()
				name := p
				if fdset {
					fd, err := unix.Open(p, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
					if err != nil {
						t.Fatal(err)
					}
					set := int64(1)
					if _, _, err := reg.AddFd(fd, qemuopen.AddRequest{SetID: &set}); err != nil {
						t.Fatal(err)
					}
					name = "/dev/fdset/1"
				}
				g := block.NewGraph(reg)
				n, err := g.Add(block.Options{"driver": "file", "node-name": "f", "cache": block.Options{"direct": true},
					"filename": name, "aio": mode})
				if err != nil {
					t.Fatal(err)
				}
				b, err := g.Attach("d", n, block.Perm{Write: true})
				if err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				for w := range 8 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						buf := alignedBuffer(8192, 4096)
						for i := range 20 {
							off := int64(w*16+i%16) * 8192
							for j := range buf {
								buf[j] = byte(w + i)
							}
							flags := block.WriteFlags(0)
							if i%5 == 0 {
								flags = block.FUA
							}
							if _, err := b.WriteV([][]byte{buf[:4096], buf[4096:]}, off, flags); err != nil {
								t.Error(err)
								return
							}
							got := alignedBuffer(8192, 4096)
							if _, err := b.ReadAt(got, off); err != nil || !bytes.Equal(got, buf) {
								t.Errorf("read back at %d: %v", off, err)
								return
							}
							// Unaligned: the bounce path.
							if _, err := b.ReadAt(got[1:100], off+1); err != nil || !bytes.Equal(got[1:100], buf[1:100]) {
								t.Errorf("unaligned read at %d: %v", off+1, err)
							}
							if i%7 == 0 {
								if err := b.Flush(); err != nil {
									t.Error(err)
								}
							}
						}
					}()
				}
				wg.Wait()
				if err := g.Close(); err != nil {
					t.Fatal(err)
				}
				if n := goroutinesSettle(base); n > base {
					t.Errorf("%d goroutines, %d before", n, base)
				}
			})
		}
	}
}

// TestEngineOverDepth: more callers than the engine has slots, each on
// its own block: callers wait for slots, whoever waits for completions
// hands that over as it leaves, and no caller is left waiting.
func TestEngineOverDepth(t *testing.T) {
	for _, mode := range engineModes {
		t.Run(mode, func(t *testing.T) {
			needEngine(t, mode)
			fdtest.Check(t)
			const callers = 3 * engineDepth
			fd, _ := openDirect(t, callers*4096)
			defer unix.Close(fd)
			eng, err := newEngine(mode, 0, engineHooks{})
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			for c := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					buf := alignedBuffer(4096, 4096)
					for i := range 10 {
						for j := range buf {
							buf[j] = byte(c + i)
						}
						if err := eng.writev(fd, [][]byte{buf}, int64(c)*4096, false); err != nil {
							t.Error(err)
							return
						}
						clear(buf)
						if err := eng.readv(fd, [][]byte{buf}, int64(c)*4096); err != nil || buf[0] != byte(c+i) || buf[4095] != byte(c+i) {
							t.Errorf("caller %d: %v, read %d", c, err, buf[0])
							return
						}
					}
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("callers still waiting after 60s")
			}
			if err := eng.close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRequestResult: what a completion's result does to a request, as
// QEMU's completion handlers treat it.
func TestRequestResult(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, tc := range []struct {
		name     string
		op       int
		off      int64
		res      int64
		done     bool
		err      error
		wantOff  int64
		wantLeft int
		zeroed   bool
	}{
		{name: "read, all", op: opRead, res: 3000, done: true, wantLeft: 3000},
		{name: "write, all", op: opWrite, res: 3000, done: true, wantLeft: 3000},
		{name: "EINTR: again", op: opRead, res: -int64(unix.EINTR), wantLeft: 3000},
		{name: "EAGAIN: again", op: opWrite, res: -int64(unix.EAGAIN), wantLeft: 3000},
		{name: "EIO", op: opWrite, res: -int64(unix.EIO), done: true, err: unix.EIO, wantLeft: 3000},
		{name: "short read mid-file: the rest again", op: opRead, res: 1500, wantOff: 1500, wantLeft: 1500},
		{name: "short write: the rest again", op: opWrite, res: 1000, wantOff: 1000, wantLeft: 2000},
		{name: "write of nothing: ENOSPC", op: opWrite, res: 0, done: true, err: unix.ENOSPC, wantLeft: 3000},
		{name: "read at EOF: zeroes", op: opRead, off: 8192, res: 0, done: true, wantOff: 8192, wantLeft: 3000, zeroed: true},
		{name: "short read reaching EOF: zeroes", op: opRead, off: 6192, res: 2000, done: true, wantOff: 8192, wantLeft: 1000, zeroed: true},
		{name: "flush", op: opSync, res: 0, done: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := bytes.Repeat([]byte{0xee}, 3000)
			var bufs [][]byte
			if tc.op != opSync {
				bufs = [][]byte{buf[:1000], buf[1000:]}
			}
			r := newRequest(tc.op, fd, bufs, tc.off, false)
			done, err := r.result(tc.res)
			if done != tc.done || err != tc.err {
				t.Errorf("done %v err %v, want %v %v", done, err, tc.done, tc.err)
			}
			if !done && (r.off != tc.off+tc.wantOff || r.remaining() != tc.wantLeft || len(r.iov) != len(r.bufs)) {
				t.Errorf("next submission at %d for %d bytes (%d iovecs), want %d for %d", r.off, r.remaining(), len(r.iov), tc.off+tc.wantOff, tc.wantLeft)
			}
			if tc.zeroed != (buf[2999] == 0) {
				t.Errorf("tail zeroed: %v, want %v", buf[2999] == 0, tc.zeroed)
			}
		})
	}
}

// TestAIOModesShadow: through the block layer with O_DIRECT, for each
// aio mode, 12 goroutines read and write random ranges (aligned ones go
// to the engine, unaligned ones through the bounce and read-modify-write
// paths, vectored and FUA ones too) and flush; every read matches a
// shadow copy, and so does the file at the end.
func TestAIOModesShadow(t *testing.T) {
	for _, mode := range []string{"threads", "native", "io_uring"} {
		t.Run(mode, func(t *testing.T) {
			needEngine(t, mode)
			fdtest.Check(t)
			const bs, blocks = 4096, 48
			p := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(p, make([]byte, bs*blocks), 0o600); err != nil {
				t.Fatal(err)
			}
			reg := qemuopen.New(qemuopen.Config{})
			defer reg.CloseAll()
			g := block.NewGraph(reg)
			n, err := g.Add(block.Options{"driver": "file", "node-name": "f", "cache": block.Options{"direct": true}, "filename": p, "aio": mode})
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Attach("d", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			shadow := make([]byte, bs*blocks)
			locks := make([]sync.Mutex, blocks)
			var wg sync.WaitGroup
			for w := range 12 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewSource(int64(w) + 100))
					for range 150 {
						var off, size int64
						if rng.Intn(2) == 0 { // aligned
							off, size = int64(rng.Intn(blocks-2))*bs, int64(1+rng.Intn(2))*bs
						} else {
							off, size = rng.Int63n(bs*(blocks-2)), 1+rng.Int63n(2*bs)
						}
						first, last := off/bs, (off+size-1)/bs
						for i := first; i <= last; i++ {
							locks[i].Lock()
						}
						buf := alignedBuffer(int(size), bs)
						half := size / 2
						switch rng.Intn(5) {
						case 0, 1:
							rng.Read(buf)
							flags := block.WriteFlags(0)
							if rng.Intn(4) == 0 {
								flags = block.FUA
							}
							if _, err := b.WriteV([][]byte{buf[:half], buf[half:]}, off, flags); err != nil {
								t.Error(err)
							}
							copy(shadow[off:], buf)
						case 2, 3:
							if _, err := b.ReadV([][]byte{buf[:half], buf[half:]}, off); err != nil {
								t.Error(err)
							} else if !bytes.Equal(buf, shadow[off:off+size]) {
								t.Errorf("read %d+%d differs from the shadow", off, size)
							}
						case 4:
							if err := b.Flush(); err != nil {
								t.Error(err)
							}
						}
						for i := first; i <= last; i++ {
							locks[i].Unlock()
						}
					}
				}()
			}
			wg.Wait()
			if err := g.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, shadow) {
				t.Error("file differs from the shadow")
			}
		})
	}
}

// TestEngineAllocations: once warm, a request through an engine
// allocates (next to) nothing: requests are reused.
func TestEngineAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops requests")
	}
	for _, mode := range engineModes {
		t.Run(mode, func(t *testing.T) {
			needEngine(t, mode)
			fdtest.Check(t)
			fd, _ := openDirect(t, 1<<20)
			defer unix.Close(fd)
			eng, err := newEngine(mode, 0, engineHooks{})
			if err != nil {
				t.Fatal(err)
			}
			defer eng.close()
			bufs := [][]byte{alignedBuffer(4096, 4096)}
			n := testing.AllocsPerRun(500, func() {
				if err := eng.readv(fd, bufs, 8192); err != nil {
					t.Fatal(err)
				}
			})
			if n > 0.5 {
				t.Errorf("%.2f allocations per read", n)
			}
		})
	}
}
