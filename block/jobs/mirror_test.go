package jobs

import (
	"bytes"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/faultdisk"
	"minivmm/block/qcow2"
	"minivmm/internal/fdtest"
)

// guestWriter writes through a backend (so that it follows the backend
// across a switch) and keeps the shadow of what the guest must read: a
// write is pending from before it is sent until it is in the shadow,
// so a check made while one is held back knows both outcomes. Every few
// writes it reads a range back and compares it with the shadow.
type guestWriter struct {
	t       *testing.T
	b       *block.Backend
	mu      sync.Mutex
	shadow  []byte
	pending []byte // the shadow with the pending write, nil when none
	stop    chan struct{}
	done    chan struct{}
	errs    []string
	writes  int
}

func startGuest(t *testing.T, b *block.Backend, shadow []byte, seed int64) *guestWriter {
	w := &guestWriter{t: t, b: b, shadow: shadow, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		rng := rand.New(rand.NewSource(seed))
		got := make([]byte, 64<<10)
		for i := 0; ; i++ {
			select {
			case <-w.stop:
				return
			default:
			}
			l := int64(4096)
			if rng.Intn(10) == 0 {
				l = 192 << 10
			}
			off := rng.Int63n((int64(len(w.shadow))-l)/4096) * 4096
			buf := make([]byte, l)
			rng.Read(buf)
			w.mu.Lock()
			w.pending = bytes.Clone(w.shadow)
			copy(w.pending[off:], buf)
			w.mu.Unlock()
			if _, err := w.b.WriteAt(buf, off); err != nil {
				w.errs = append(w.errs, err.Error())
				return
			}
			w.mu.Lock()
			copy(w.shadow[off:], buf)
			w.pending = nil
			w.writes++
			w.mu.Unlock()
			roff := rng.Int63n(int64(len(w.shadow))/int64(len(got))) * int64(len(got))
			if _, err := w.b.ReadAt(got, roff); err != nil {
				w.errs = append(w.errs, err.Error())
				return
			}
			if !bytes.Equal(got, w.shadow[roff:roff+int64(len(got))]) {
				w.errs = append(w.errs, "the guest read other data than it wrote")
				return
			}
			if i%32 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	return w
}

// matches: got is the shadow, or the shadow with the write in flight.
func (w *guestWriter) matches(got []byte) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Equal(got, w.shadow) || w.pending != nil && bytes.Equal(got, w.pending)
}

func (w *guestWriter) finish() []byte {
	close(w.stop)
	<-w.done
	for _, e := range w.errs {
		w.t.Error("guest:", e)
	}
	if w.writes == 0 {
		w.t.Error("the guest wrote nothing: the test proved nothing")
	}
	return w.shadow
}

// qemuCompare checks an image with qemu-img check and compares it with
// the shadow (as a raw file), when qemu-img is there.
func qemuCompare(t *testing.T, image string, want []byte) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed (CI=true)")
		}
		t.Log("qemu-img not installed; apt-get install qemu-utils: images not checked")
		return
	}
	raw := filepath.Join(t.TempDir(), "want.raw")
	if err := os.WriteFile(raw, want, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "check", "-U", image).CombinedOutput(); err != nil {
		t.Errorf("qemu-img check %s: %v\n%s", image, err, out)
	}
	if out, err := exec.Command("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "raw", image, raw).CombinedOutput(); err != nil {
		t.Errorf("qemu-img compare %s with the guest's view: %v\n%s", image, err, out)
	}
}

// startActive starts active commit of c.top into c.base as the monitor
// does: base reopened read-write first.
func startActive(t *testing.T, c *chainGraph, m *Manager, speed int64) *Job {
	t.Helper()
	if err := c.g.SetReadOnly(c.base, false); err != nil {
		t.Fatal(err)
	}
	j, err := m.Start(Spec{ID: "c", Type: "commit", Speed: speed, AutoFinalize: true, AutoDismiss: true},
		&Mirror{Graph: c.g, Source: c.top, Target: c.base, Base: c.base, Sync: engine.SyncFull, BaseWasRO: true})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestActiveCommit: with a guest writing all along, active commit
// becomes ready, and block-job-complete moves the guest's backend onto
// the base, which then holds exactly what the guest sees and stays
// read-write (fds: O_RDONLY before, O_RDWR during and after). A soft
// cancel once ready ends it without the switch (BLOCK_JOB_COMPLETED),
// a forced one with BLOCK_JOB_CANCELLED; both put the base back to
// read-only. The old top's fds go with it (blockdev-del).
func TestActiveCommit(t *testing.T) {
	fdtest.Check(t)
	for _, end := range []string{"complete", "soft-cancel", "force-cancel"} {
		t.Run(end, func(t *testing.T) {
			c := newChain(t, "")
			basePath := filepath.Join(c.dir, "base.qcow2")
			topPath := filepath.Join(c.dir, "top.qcow2")
			if m := fdModes(t, basePath); m["rw"] != 1 || m["r"] != 2 {
				t.Fatalf("base fds before: %v", m)
			}
			r := newRecorder()
			m := NewManager(r.emit)
			guest := startGuest(t, c.w, readAll(t, c.top), 7)
			j := startActive(t, c, m, 0)
			if mo := fdModes(t, basePath); mo["rw"] != 2 || mo["r"] != 1 {
				t.Errorf("base fds during: %v", mo)
			}
			r.waitFor(t, "BLOCK_JOB_READY")
			time.Sleep(30 * time.Millisecond) // the guest writes on while ready
			switch end {
			case "complete":
				if err := j.Complete(); err != nil {
					t.Fatal(err)
				}
			case "soft-cancel":
				j.Cancel(false)
			case "force-cancel":
				j.Cancel(true)
			}
			waitJob(t, j)
			want := guest.finish()
			if got := make([]byte, len(want)); true {
				if _, err := c.w.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("the guest's disk differs from what it wrote (%v)", err)
				}
			}
			ev := strings.Join(r.list(), ",")
			wantNode, last, baseRO := c.top, "BLOCK_JOB_COMPLETED", true
			switch end {
			case "complete":
				wantNode, baseRO = c.base, false
			case "force-cancel":
				last = "BLOCK_JOB_CANCELLED"
			}
			if !strings.Contains(ev, "BLOCK_JOB_READY") || !strings.Contains(ev, last) {
				t.Errorf("events %s lack %s", ev, last)
			}
			if c.w.Node() != wantNode {
				t.Errorf("the backend uses %s, want %s", c.w.Node().Name(), wantNode.Name())
			}
			if c.base.ReadOnly() != baseRO {
				t.Errorf("base read-only %v, want %v", c.base.ReadOnly(), baseRO)
			}
			wantModes := map[bool]map[string]int{true: {"rw": 1, "r": 2}, false: {"rw": 2, "r": 1}}[baseRO]
			if mo := fdModes(t, basePath); mo["rw"] != wantModes["rw"] || mo["r"] != wantModes["r"] {
				t.Errorf("base fds after: %v, want %v", mo, wantModes)
			}
			if end == "complete" {
				if !bytes.Equal(readAll(t, c.base), want) {
					t.Error("base differs from the guest's view after the switch")
				}
				if err := c.g.Delete("top"); err != nil {
					t.Fatal(err)
				}
				if mo := fdModes(t, topPath); mo["rw"] != 1 || mo["r"] != 1 {
					t.Errorf("the old top's fds after blockdev-del: %v (only the fdset's own should remain)", mo)
				}
			}
			c.g.Detach(c.w)
			c.g.Close()
			if end == "complete" {
				qemuCompare(t, basePath, want)
			}
		})
	}
}

// newMirrorTarget makes an empty qcow2 image as long as the chain's and
// opens it (as blockdev-add would) in c's graph.
func newMirrorTarget(t *testing.T, c *chainGraph) (*block.Node, string) {
	return newMirrorTargetSized(t, c, c.top.Length())
}

func newMirrorTargetSized(t *testing.T, c *chainGraph, size int64) (*block.Node, string) {
	t.Helper()
	path := filepath.Join(c.dir, "target.qcow2")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := qcow2.Create(qcow2.FdTarget(int(f.Fd())), qcow2.CreateOptions{Size: uint64(size)}); err != nil {
		t.Fatal(err)
	}
	n, err := c.g.AddRoot(block.Options{"driver": "qcow2", "node-name": "target",
		"file": block.Options{"driver": "file", "filename": path}})
	if err != nil {
		t.Fatal(err)
	}
	return n, path
}

// TestMirrorJob: blockdev-mirror sync=full with a guest writing; after
// complete the backend uses the target, which holds what the guest
// sees; a soft cancel once ready leaves the backend on the source and
// the target a copy of the source at that moment.
func TestMirrorJob(t *testing.T) {
	fdtest.Check(t)
	for _, end := range []string{"complete", "soft-cancel"} {
		t.Run(end, func(t *testing.T) {
			c := newChain(t, "")
			target, targetPath := newMirrorTarget(t, c)
			r := newRecorder()
			m := NewManager(r.emit)
			guest := startGuest(t, c.w, readAll(t, c.top), 3)
			j, err := m.Start(Spec{ID: "m", Type: "mirror", AutoFinalize: true, AutoDismiss: true},
				&Mirror{Graph: c.g, Source: c.top, Target: target, Sync: engine.SyncFull, Granularity: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			r.waitFor(t, "BLOCK_JOB_READY")
			time.Sleep(30 * time.Millisecond)
			var want []byte
			if end == "complete" {
				j.Complete()
				waitJob(t, j)
				want = guest.finish()
			} else {
				want = guest.finish()
				j.Cancel(false)
				waitJob(t, j)
			}
			wantNode := map[string]*block.Node{"complete": target, "soft-cancel": c.top}[end]
			if c.w.Node() != wantNode {
				t.Errorf("the backend uses %s, want %s", c.w.Node().Name(), wantNode.Name())
			}
			if !bytes.Equal(readAll(t, target), want) {
				t.Error("target differs from the guest's view")
			}
			if ev := strings.Join(r.list(), ","); !strings.HasSuffix(ev, "BLOCK_JOB_COMPLETED,JOB_STATUS_CHANGE concluded,JOB_STATUS_CHANGE null") {
				t.Errorf("events %s", ev)
			}
			c.g.Detach(c.w)
			c.g.Close()
			qemuCompare(t, targetPath, want)
		})
	}
}

// TestMirrorCancelAtRandom: a forced cancel at a random moment, while
// the guest writes, ends the job with BLOCK_JOB_CANCELLED, the backend
// on the source reading what the guest wrote, a valid target image, and
// no fd left behind.
func TestMirrorCancelAtRandom(t *testing.T) {
	fdtest.Check(t)
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for i := range 6 {
		c := newChain(t, "")
		var target *block.Node
		var targetPath string
		active := i%2 == 0
		r := newRecorder()
		m := NewManager(r.emit)
		guest := startGuest(t, c.w, readAll(t, c.top), int64(i))
		var j *Job
		if active {
			j = startActive(t, c, m, 16*mib)
			targetPath = filepath.Join(c.dir, "base.qcow2")
		} else {
			target, targetPath = newMirrorTarget(t, c)
			var err error
			j, err = m.Start(Spec{ID: "m", Type: "mirror", Speed: 16 * mib, AutoFinalize: true, AutoDismiss: true},
				&Mirror{Graph: c.g, Source: c.top, Target: target, Sync: engine.SyncFull, Filter: i%4 == 1})
			if err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Duration(rng.Intn(400)) * time.Millisecond)
		j.Cancel(true)
		waitJob(t, j)
		want := guest.finish()
		if c.w.Node() != c.top {
			t.Fatalf("round %d: the backend moved to %s on a cancel", i, c.w.Node().Name())
		}
		if !bytes.Equal(readAll(t, c.top), want) {
			t.Fatalf("round %d: the guest's disk changed", i)
		}
		if active && !c.base.ReadOnly() {
			t.Errorf("round %d: base left read-write", i)
		}
		if ev := strings.Join(r.list(), ","); !strings.Contains(ev, "BLOCK_JOB_CANCELLED") {
			t.Errorf("round %d: events %s", i, ev)
		}
		c.g.Detach(c.w)
		c.g.Close()
		if out, err := exec.Command("qemu-img", "check", "-U", targetPath).CombinedOutput(); err != nil && !os.IsNotExist(err) {
			if _, lookErr := exec.LookPath("qemu-img"); lookErr == nil {
				t.Errorf("round %d: qemu-img check: %v\n%s", i, err, out)
			}
		}
	}
}

// TestMirrorSizeMismatch: QEMU's run-time refusal of a target of
// another size, as the job's error.
func TestMirrorSizeMismatch(t *testing.T) {
	fdtest.Check(t)
	c := newChain(t, "")
	target, _ := newMirrorTargetSized(t, c, c.top.Length()+mib)
	r := newRecorder()
	m := NewManager(r.emit)
	j, err := m.Start(Spec{ID: "m", Type: "mirror", AutoFinalize: true, AutoDismiss: true},
		&Mirror{Graph: c.g, Source: c.top, Target: target, Sync: engine.SyncFull})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, j)
	if in := j.Info(); in.Error != "Source and target image have different sizes" {
		t.Errorf("error %q", in.Error)
	}
}

// TestMirrorTargetErrors: a write to the target that fails once is
// reported as QEMU's BLOCK_JOB_ERROR (operation write) and then, per
// on-target-error, fails the job (report), is copied again (ignore), or
// pauses the job until it is resumed (stop); the target ends up holding
// what the source does.
func TestMirrorTargetErrors(t *testing.T) {
	fdtest.Check(t)
	for _, policy := range []string{"report", "ignore", "stop"} {
		t.Run(policy, func(t *testing.T) {
			c := newChain(t, "")
			disk := faultdisk.New(c.top.Length())
			rule := disk.AddRule(&faultdisk.Rule{Kinds: faultdisk.Write, Off: 2 * mib, Len: 4096, Times: 1})
			if err := disk.Install(c.g, "fault"); err != nil {
				t.Fatal(err)
			}
			target, err := c.g.AddRoot(block.Options{"driver": "raw", "node-name": "target", "file": block.Options{"driver": "fault"}})
			if err != nil {
				t.Fatal(err)
			}
			want := readAll(t, c.top)
			r := newRecorder()
			m := NewManager(r.emit)
			j, err := m.Start(Spec{ID: "m", Type: "mirror", AutoFinalize: true, AutoDismiss: true},
				&Mirror{Graph: c.g, Source: c.top, Target: target, Sync: engine.SyncFull, OnTargetError: policy})
			if err != nil {
				t.Fatal(err)
			}
			switch policy {
			case "report":
				waitJob(t, j)
				if !strings.Contains(strings.Join(r.list(), ","), "BLOCK_JOB_ERROR,JOB_STATUS_CHANGE aborting") || j.Info().Error == "" {
					t.Fatalf("events %v, error %q", r.list(), j.Info().Error)
				}
				if c.w.Node() != c.top {
					t.Fatal("a failed mirror moved the backend")
				}
				return
			case "stop":
				r.waitFor(t, "JOB_STATUS_CHANGE paused")
				if in := j.Info(); in.IOStatus != "failed" {
					t.Errorf("io-status %q while stopped", in.IOStatus)
				}
				if err := j.Resume(); err != nil {
					t.Fatal(err)
				}
			}
			r.waitFor(t, "BLOCK_JOB_READY")
			if err := j.Complete(); err != nil {
				t.Fatal(err)
			}
			waitJob(t, j)
			if rule.Fired() != 1 || !strings.Contains(strings.Join(r.list(), ","), "BLOCK_JOB_ERROR") {
				t.Fatalf("the fault fired %d times; events %v", rule.Fired(), r.list())
			}
			if c.w.Node() != target || !bytes.Equal(readAll(t, target), want) {
				t.Fatal("after the retried copy, the target is not the source")
			}
			c.g.Detach(c.w)
		})
	}
}
