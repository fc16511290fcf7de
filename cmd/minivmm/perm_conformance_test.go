package main

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// lockBytesOn lists the lock bytes QEMU's scheme uses that anyone holds on
// path (tested from a description of our own, as QEMU tests them).
func lockBytesOn(t *testing.T, path string) []int64 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	held := []int64{}
	for _, off := range []int64{100, 101, 102, 103, 200, 201, 202, 203} {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: unix.SEEK_SET, Start: off, Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk); err != nil {
			t.Fatal(err)
		}
		if lk.Type != unix.F_UNLCK {
			held = append(held, off)
		}
	}
	return held
}

// permNodes rewrites a query-named-block-nodes reply to what this test
// compares: each node's name, driver and read-only flag (minivmm's qcow2
// "image" member says less than QEMU's, which is not this test's concern).
func permNodes(t *testing.T, r *confRun, replies []map[string]any) {
	for _, reply := range replies {
		list, ok := reply["return"].([]any)
		if !ok {
			t.Errorf("%s: query-named-block-nodes: %v", r.name, reply)
			continue
		}
		var short []any
		for _, e := range list {
			n, _ := e.(map[string]any)
			short = append(short, map[string]any{"node-name": n["node-name"], "drv": n["drv"], "ro": n["ro"]})
		}
		reply["return"] = short
	}
}

// TestPermConformance: several nodes on one qcow2 image, in one process,
// against qemu-system-x86_64 reply by reply, with the lock bytes on the
// image after every step: file nodes lock what their parents need, not
// how they are open; two parents of one node that do not share what the
// other needs conflict in QEMU's words; a refused add or reopen (a child
// swap too) changes nothing.
func TestPermConformance(t *testing.T) {
	needTools(t, "qemu-img", "qemu-io")
	fdtest.Check(t)
	img, err := filepath.EvalSymlinks(lockImage(t))
	if err != nil {
		t.Fatal(err)
	}
	setup := bcSetup(img)
	fds := setup.afterStep
	setup.afterStep = func(t *testing.T, r *confRun, c *qmptest.Client, entry map[string]any) {
		t.Helper()
		fds(t, r, c, entry)
		entry["locks on the image"] = lockBytesOn(t, img)
	}
	add := func(args string) string { return bcCmd("blockdev-add", args) }
	reopen := func(list string) string { return bcCmd("blockdev-reopen", `{"options": [`+list+`]}`) }
	del := func(name string) string { return bcCmd("blockdev-del", `{"node-name": "`+name+`"}`) }
	steps := []confStep{
		{name: "qmp_capabilities", send: bcCmd("qmp_capabilities", "")},
		{name: "fd baseline", kind: confFdBaseline},
		{name: "add file f: locks nothing", send: add(`{"driver": "file", "node-name": "f", "filename": "@IMG@"}`)},
		{name: "add file f2 on the same image", send: add(`{"driver": "file", "node-name": "f2", "filename": "@IMG@"}`)},
		{name: "add file fro, read-only", send: add(`{"driver": "file", "node-name": "fro", "filename": "@IMG@", "read-only": true}`)},
		{name: "add qcow2 q1 over f: a writer's locks", send: add(`{"driver": "qcow2", "node-name": "q1", "file": "f"}`)},
		{name: "add qcow2 q2 over f: permission conflict", send: add(`{"driver": "qcow2", "node-name": "q2", "file": "f"}`)},
		{name: "add qcow2 q3 read-write over fro", send: add(`{"driver": "qcow2", "node-name": "q3", "file": "fro"}`)},
		{name: "add qcow2 q4 read-only over f2: f unshares nothing q4 needs, q4 unshares write", send: add(`{"driver": "qcow2", "node-name": "q4", "read-only": true, "file": "f2"}`)},
		{name: "add qcow2 q5 over f2: f does not share write", send: add(`{"driver": "qcow2", "node-name": "q5", "file": "f2"}`)},
		{name: "add raw r over f2: needs nothing", send: add(`{"driver": "raw", "node-name": "r", "file": "f2"}`)},
		{name: "del r", send: del("r")},
		{name: "query-named-block-nodes: no q2..q5", send: bcQueryNodes, check: permNodes},
		{name: "reopen q1 read-only: a reader's locks", send: reopen(`{"driver": "qcow2", "node-name": "q1", "file": "f", "read-only": true}`)},
		{name: "add q4 read-only over f2: two readers", send: add(`{"driver": "qcow2", "node-name": "q4", "read-only": true, "file": "f2"}`)},
		{name: "reopen q1 read-write: q4 does not share write", send: reopen(`{"driver": "qcow2", "node-name": "q1", "file": "f"}`)},
		{name: "query-named-block-nodes: q1 still read-only", send: bcQueryNodes, check: permNodes},
		{name: "reopen q1 onto f2, read-only", send: reopen(`{"driver": "qcow2", "node-name": "q1", "file": "f2", "read-only": true}`)},
		{name: "reopen q1 read-write on f2: q4 does not share write", send: reopen(`{"driver": "qcow2", "node-name": "q1", "file": "f2"}`)},
		{name: "reopen q1 back onto f, read-write: f2 (q4) does not share write", send: reopen(`{"driver": "qcow2", "node-name": "q1", "file": "f"}`)},
		{name: "query-named-block-nodes: q1 read-only on f2", send: bcQueryNodes, check: permNodes},
		{name: "del q4", send: del("q4")},
		{name: "reopen q1 read-write on f2", send: reopen(`{"driver": "qcow2", "node-name": "q1", "file": "f2"}`)},
		{name: "reopen q1 onto f, read-write: refused, f2 holds q1's locks until commit", send: reopen(`{"driver": "qcow2", "node-name": "q1", "file": "f"}`)},
		{name: "del q1: nothing locked", send: del("q1")},
		{name: "del f", send: del("f")},
		{name: "del f2", send: del("f2")},
		{name: "del fro", send: del("fro")},
		{name: "query-named-block-nodes: none", send: bcQueryNodes},
		{name: "fds back to the baseline", kind: confFdCheck},
	}
	runConformanceWith(t, setup, bcSteps(steps, "@IMG@", img))
}
