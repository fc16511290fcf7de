package qcow2

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/internal/fdtest"
)

const (
	crashRegion = 8 << 20
	crashSlot   = 5000 // unaligned: writes straddle clusters
	crashLen    = 4096
)

func crashPattern(run, slot int) []byte {
	p := make([]byte, crashLen)
	for i := range p {
		p[i] = byte(run*31 + slot + i/512)
	}
	return p
}

// TestWriteCrashChild is the child of TestWriteCrash: it discards its
// region, then writes slots, flushing every few and saying how many were
// flushed, until killed.
func TestWriteCrashChild(t *testing.T) {
	env := os.Getenv("QCOW2_CRASH_CHILD")
	if env == "" {
		t.Skip("run by TestWriteCrash")
	}
	img, runS, _ := strings.Cut(env, ":")
	run, _ := strconv.Atoi(runS)
	g := fixture(t)
	n, b := openRW(t, g, img)
	defer g.Detach(b)
	base := int64(run%3) * crashRegion
	if err := n.Discard(base, crashRegion); err != nil {
		t.Fatal(err)
	}
	for slot := 0; int64(slot+1)*crashSlot < crashRegion; slot++ {
		if _, err := n.WriteAt(crashPattern(run, slot), base+int64(slot)*crashSlot); err != nil {
			t.Fatal(err)
		}
		if slot%8 == 7 {
			if err := n.Flush(); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("FLUSHED %d\n", slot+1)
		}
	}
	select {}
}

// crashKinds are the images TestWriteCrash crashes writers of: qemu-img
// create options, and a setup run on the new image.
var crashKinds = []struct {
	name  string
	opts  string
	runs  int
	setup func(t *testing.T, img string)
}{
	{name: "lazy refcounts", opts: "cluster_size=4096,lazy_refcounts=on", runs: 12},
	{name: "lazy refcounts extended L2 internal snapshot", opts: "cluster_size=16384,extended_l2=on,lazy_refcounts=on", runs: 8, setup: func(t *testing.T, img string) {
		qemuIO(t, img, "write -P 0x5a 0 24M")
		run(t, "", "qemu-img", "snapshot", "-c", "s", img)
	}},
	{name: "4k", opts: "cluster_size=4096", runs: 24},
	{name: "extended L2", opts: "cluster_size=16384,extended_l2=on", runs: 12},
	{name: "internal snapshot", opts: "cluster_size=4096", runs: 12, setup: func(t *testing.T, img string) {
		qemuIO(t, img, "write -P 0x5a 0 24M")
		run(t, "", "qemu-img", "snapshot", "-c", "s", img)
	}},
	{name: "extended L2 internal snapshot", opts: "cluster_size=16384,extended_l2=on", runs: 8, setup: func(t *testing.T, img string) {
		qemuIO(t, img, "write -P 0x5a 0 24M")
		run(t, "", "qemu-img", "snapshot", "-c", "s", img)
	}},
}

// TestWriteCrash kills a writing child at random moments: qemu-img
// check must find no corruption (leaks allowed), and everything flushed
// must read back. An image with lazy refcounts is left dirty, its
// refcounts on disk stale: it is checked after minivmm's repair (at the
// first write of a read-write open).
func TestWriteCrash(t *testing.T) {
	needQemu(t)
	if testing.Short() {
		t.Skip("short")
	}
	// The kinds run at once: a run mostly waits for the moment to kill
	// its child. The fd count is checked here, around all of them.
	fdtest.Check(t)
	for _, k := range crashKinds {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "crash.qcow2")
			run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", k.opts, img, "24M")
			if k.setup != nil {
				k.setup(t, img)
			}
			crashRuns(t, img, k.runs)
			if k.setup != nil {
				got := snapshotContents(t, dir, img, []string{"s"})["s"]
				if !bytes.Equal(got, bytes.Repeat([]byte{0x5a}, 24<<20)) {
					t.Errorf("snapshot s changed")
				}
			}
		})
	}
}

func crashRuns(t *testing.T, img string, runs int) {
	r := rand.New(rand.NewPCG(9, 9))
	for i := range runs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWriteCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), fmt.Sprintf("QCOW2_CRASH_CHILD=%s:%d", img, i))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		flushed := make(chan int, 1)
		go func() {
			last := 0
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if v, ok := strings.CutPrefix(sc.Text(), "FLUSHED "); ok {
					last, _ = strconv.Atoi(v)
				}
			}
			flushed <- last
		}()
		time.Sleep(time.Duration(20+r.IntN(400)) * time.Millisecond)
		cmd.Process.Signal(unix.SIGKILL)
		cmd.Wait()
		last := <-flushed
		if headerU64(t, img, 72)&incompatDirty != 0 {
			repairByWriting(t, img)
			t.Logf("run %d: left dirty, repaired", i)
		}
		qemuCheck(t, img, true)

		g := parallelFixture(t)
		n, err := openQcow2(g, img, nil)
		if err != nil {
			t.Fatal(err)
		}
		base := int64(i%3) * crashRegion
		got := make([]byte, crashLen)
		for slot := range last {
			if _, err := n.ReadAt(got, base+int64(slot)*crashSlot); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, crashPattern(i, slot)) {
				t.Fatalf("run %d: slot %d (of %d flushed) lost", i, slot, last)
			}
		}
		g.Delete(n.Name())
		t.Logf("run %d: %d slots flushed", i, last)
	}
	// A final read-write open cleans nothing up but must still work.
	g := parallelFixture(t)
	n, b := openRW(t, g, img)
	if _, err := n.WriteAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	g.Detach(b)
	g.Delete(n.Name())
	qemuCheck(t, img, true)
}

// TestWriteOverlap: an L2 entry pointing into the L1 table makes the
// write fail with EIO and the image marked corrupt, the L1 table intact.
func TestWriteOverlap(t *testing.T) {
	needQemu(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "ov.qcow2")
	run(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
	qemuIO(t, img, "write -P 0x11 0 64k")
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b8 [8]byte
	f.ReadAt(b8[:], 40)
	l1Off := int64(binary.BigEndian.Uint64(b8[:]))
	f.ReadAt(b8[:], l1Off)
	l2Off := int64(binary.BigEndian.Uint64(b8[:]) & offsetMask)
	binary.BigEndian.PutUint64(b8[:], uint64(l1Off)|flagCopied)
	f.WriteAt(b8[:], l2Off)
	f.Close()
	l1Before := make([]byte, 512)
	func() {
		f, _ := os.Open(img)
		defer f.Close()
		f.ReadAt(l1Before, l1Off)
	}()

	g := fixture(t)
	var events []block.Corruption
	g.OnCorruption(func(c block.Corruption) { events = append(events, c) })
	n, b := openRW(t, g, img)
	_, err = n.WriteAt(bytes.Repeat([]byte{0xff}, 512), 0)
	if err == nil || !strings.Contains(err.Error(), "overlaps with active L1 table") || !errorsIsEIO(err) {
		t.Fatalf("write over the L1 table: %v", err)
	}
	if len(events) != 1 || events[0].Node != n.Name() || !events[0].Fatal || events[0].Offset != l1Off ||
		events[0].Msg != "Preventing invalid write on metadata (overlaps with active L1 table)" {
		t.Errorf("corruption events: %+v", events)
	}
	// As QEMU's node loses its driver: No medium found from then on.
	if _, err := n.WriteAt(make([]byte, 512), 1<<20); !errors.Is(err, unix.ENOMEDIUM) {
		t.Errorf("write after corruption: %v", err)
	}
	g.Detach(b)
	g.Delete(n.Name())
	if headerU64(t, img, 72)&incompatCorrupt == 0 {
		t.Error("corrupt bit not set")
	}
	raw, _ := os.ReadFile(img)
	if !bytes.Equal(raw[l1Off:l1Off+512], l1Before) {
		t.Error("the L1 table was overwritten")
	}
	g2 := fixture(t)
	if _, err := openQcow2(g2, img, block_rw()); err == nil || err.Error() != "qcow2: Image is corrupt; cannot be opened read/write" {
		t.Errorf("read-write open of the corrupt image: %v", err)
	}
}

func errorsIsEIO(err error) bool { return errors.Is(err, unix.EIO) }

func block_rw() block.Options { return block.Options{"read-only": false} }

// repairByWriting opens a dirty image read-write and rewrites its first
// sector as it is: the first write repairs the refcounts, and the last
// writer leaving marks the image clean.
func repairByWriting(t *testing.T, img string) {
	t.Helper()
	g := parallelFixture(t) // the calling test checks fds
	n, b := openRW(t, g, img)
	sec := make([]byte, 512)
	if _, err := n.ReadAt(sec, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteAt(sec, 0); err != nil {
		t.Fatalf("write to a dirty image: %v", err)
	}
	g.Detach(b)
	g.Delete(n.Name())
	if headerU64(t, img, 72)&incompatDirty != 0 {
		t.Fatal("still dirty after a read-write open and close")
	}
}
