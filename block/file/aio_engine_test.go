package file

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

// engines are the kernel interfaces under test, each made fresh.
var engineModes = []string{"native", "io_uring"}

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
			fdtest.Check(t)
			const bs, blocks = 4096, 64
			fd, p := openDirect(t, bs*blocks)
			defer unix.Close(fd)
			eng, err := newEngine(mode, engineHooks{})
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
			if err := eng.close(fd); err != nil {
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
