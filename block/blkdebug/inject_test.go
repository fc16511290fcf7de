package blkdebug

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"minivmm/block"
	_ "minivmm/block/file"
	_ "minivmm/block/qcow2"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
)

func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed (CI=true)")
		}
		t.Skip("qemu-img not installed; apt-get install qemu-utils")
	}
}

// workload writes, overwrites, flushes and reads back on a qcow2 image
// with 512-byte clusters (so that L2 tables and refcount blocks are
// allocated often), stopping at the first error. want is the disk as of
// the last successful flush; fuzzy lists the ranges the failed request
// may or may not have changed.
func workload(b *block.Backend, size int64) (want []byte, fuzzy [][2]int64, err error) {
	want = make([]byte, size)
	cur := make([]byte, size)
	for i := range 24 {
		type w struct {
			off int64
			p   []byte
		}
		off := int64(i) * 40 << 10
		ws := []w{{off, bytes.Repeat([]byte{byte(i + 1)}, 12288)}}
		if i > 0 {
			ws = append(ws, w{off - 40<<10 + 1024, bytes.Repeat([]byte{byte(0x80 + i)}, 1024)})
		}
		for _, x := range ws {
			fuzzy = append(fuzzy, [2]int64{x.off, x.off + int64(len(x.p))})
			if _, err := b.WriteAt(x.p, x.off); err != nil {
				return want, fuzzy, err
			}
			copy(cur[x.off:], x.p)
		}
		if err := b.Flush(); err != nil {
			return want, fuzzy, err
		}
		copy(want, cur)
		fuzzy = nil
		got := make([]byte, 4096)
		if _, err := b.ReadAt(got, off); err != nil {
			return want, nil, err
		}
		if !bytes.Equal(got, cur[off:off+4096]) {
			return want, nil, errors.New("read back something else than was written")
		}
	}
	return want, nil, nil
}

// TestInjectEveryEvent fails, once, the request after each event qcow2
// reaches in the workload: the error reaches the caller, qemu-img check
// finds no corruption (leaks are allowed) and everything flushed before
// the error reads back.
func TestInjectEveryEvent(t *testing.T) {
	needQemuImg(t)
	fdtest.Check(t)
	const size = 1 << 20
	var hit []string
	for _, ev := range Events {
		if ev == "none" {
			continue
		}
		path := filepath.Join(t.TempDir(), "t.qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", path, "1M").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v: %s", err, out)
		}
		g := block.NewGraph(qemuopen.New(qemuopen.Config{}))
		n, err := g.Add(block.Options{"driver": "qcow2", "node-name": "top", "file": block.Options{
			"driver": "blkdebug", "node-name": "bd",
			"inject-error": []any{map[string]any{"event": ev, "once": true}},
			"image":        block.Options{"driver": "file", "filename": path},
		}})
		if err != nil {
			g.Close()
			t.Fatalf("%s: open: %v", ev, err)
		}
		bd := n.Child("file").Image().(*image)
		b, err := g.Attach("", n, block.Perm{Write: true})
		if err != nil {
			g.Close()
			t.Fatal(err)
		}
		want, fuzzy, opErr := workload(b, size)
		closeErr := g.Close()
		bd.mu.Lock()
		injected := len(bd.rules[ev]) == 0
		bd.mu.Unlock()
		if !injected {
			if opErr != nil {
				t.Errorf("%s: nothing injected, yet: %v", ev, opErr)
			}
			continue
		}
		hit = append(hit, ev)
		if opErr == nil && closeErr == nil {
			t.Errorf("%s: an error was injected and no one heard of it", ev)
		}
		if opErr != nil && !errors.Is(opErr, errEIO) {
			t.Errorf("%s: %v, want EIO", ev, opErr)
		}
		out, err := exec.Command("qemu-img", "check", "-f", "qcow2", path).CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 3) {
			t.Errorf("%s: qemu-img check: %v\n%s", ev, err, out)
			continue
		}
		raw := filepath.Join(t.TempDir(), "t.raw")
		if out, err := exec.Command("qemu-img", "convert", "-O", "raw", path, raw).CombinedOutput(); err != nil {
			t.Errorf("%s: qemu-img convert: %v\n%s", ev, err, out)
			continue
		}
		got, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fuzzy {
			copy(got[f[0]:f[1]], want[f[0]:f[1]])
		}
		if !bytes.Equal(got, want) {
			i := 0
			for got[i] == want[i] {
				i++
			}
			t.Errorf("%s: flushed data lost: first difference at %#x (%#x, want %#x)", ev, i, got[i], want[i])
		}
	}
	t.Logf("errors injected at %d events: %v", len(hit), hit)
	if len(hit) < 10 {
		t.Errorf("only %d events exercised", len(hit))
	}
}

var errEIO = syscallEIO()
