package vhostuser_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"minivmm/internal/linuxguest"
)

// lockedBuffer collects a helper's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestGuestSurvivesBackendKill: a real Linux guest writes with O_DIRECT
// through QEMU's vhost-user-blk-pci (reconnect=1) to minivmm's export;
// minivmm is killed with -9 while one of the guest's writes is in flight
// (held by the block layer), and another minivmm started on the same
// socket and image. QEMU reconnects and hands it the inflight file; the
// new export resubmits the write, and the guest's writes complete and
// read back, and the image holds them.
func TestGuestSurvivesBackendKill(t *testing.T) {
	kit := linuxguest.Need(t)
	dir := t.TempDir()
	img, sock := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "vu.sock")
	qemuTool(t, "qemu-img", "create", "-q", "-f", "raw", img, "64M")
	writes := []linuxguest.Pattern{
		{Offset: 0, Len: 1 << 20, Byte: 0x5a},
		{Offset: 4 << 20, Len: 2 << 20, Byte: 0x6b},
		{Offset: 12 << 20, Len: 1 << 20, Byte: 0x7c},
	}
	stallAt := int64(5<<20 + 4096) // inside the second pattern
	var first, second lockedBuffer
	dead := startHelperTo(t, &first, sock, img, false, fmt.Sprintf("VU_STALL=%d", stallAt))
	swapped := make(chan error, 1)
	go func() {
		for deadline := time.Now().Add(60 * time.Second); !strings.Contains(first.String(), "STALLED"); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				swapped <- fmt.Errorf("no write reached the stalled offset")
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
		dead.Process.Kill()
		dead.Wait()
		startHelperTo(t, &second, sock, img, false)
		swapped <- nil
	}()
	r, err := kit.Run(context.Background(), dir, linuxguest.WriteScript(writes, nil), linuxguest.Boot{Socket: sock, Reconnect: true, Timeout: 100 * time.Second})
	if serr := <-swapped; serr != nil {
		if r != nil {
			t.Logf("console:\n%s", r.Console)
		}
		t.Fatal(serr)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("guest ran in %v", r.Elapsed)
	if r.Status != 0 {
		t.Fatalf("guest script exit %d:\n%s", r.Status, r.Console)
	}
	for _, m := range linuxguest.CheckSums(r, writes) {
		t.Error(m)
	}
	t.Logf("first back end:\n%s\nsecond back end:\n%s", first.String(), second.String())
	if !strings.Contains(second.String(), "left in flight are resubmitted") {
		t.Errorf("the second back end resubmitted nothing; its log:\n%s", second.String())
	}
	for _, w := range writes {
		qemuTool(t, "qemu-io", "-r", "-U", "-f", "raw", "-c", fmt.Sprintf("read -P %d %d %d", w.Byte, w.Offset, w.Len), img)
	}
}
