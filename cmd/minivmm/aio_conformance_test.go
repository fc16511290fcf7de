package main

import "testing"

// TestBlockConformanceAIO: file nodes with aio=native (cache.direct=on)
// and aio=io_uring open as in Debian's QEMU 7.2, side by side with
// qemu-system-x86_64; query-named-block-nodes shows no aio (nor does
// QEMU's); native without cache.direct and unknown modes are refused in
// QEMU's words; after blockdev-del minivmm holds no context or ring fd.
func TestBlockConformanceAIO(t *testing.T) {
	t.Parallel()
	img := bcImage(t)
	add := func(args string) string { return bcCmd("blockdev-add", args) }
	steps := []confStep{
		{name: "qmp_capabilities", send: bcCmd("qmp_capabilities", "")},
		{name: "fd baseline", kind: confFdBaseline},
		{name: "add: native, cache.direct", send: add(`{"driver": "file", "node-name": "n", "filename": "@IMG@", "aio": "native", "cache": {"direct": true}}`)},
		{name: "add: io_uring", send: add(`{"driver": "file", "node-name": "u", "filename": "@IMG@", "aio": "io_uring", "locking": "off"}`)},
		{name: "add: io_uring, cache.direct", send: add(`{"driver": "file", "node-name": "ud", "filename": "@IMG@", "aio": "io_uring", "cache": {"direct": true}, "locking": "off"}`)},
		{name: "add: threads, aio-max-batch", send: add(`{"driver": "file", "node-name": "t", "filename": "@IMG@", "aio": "threads", "aio-max-batch": 4, "locking": "off"}`)},
		{name: "add: raw over the native node", send: add(`{"driver": "raw", "node-name": "r", "file": "n"}`)},
		{name: "add: native without cache.direct", send: add(`{"driver": "file", "node-name": "x", "filename": "@IMG@", "aio": "native"}`)},
		{name: "add: aio bogus", send: add(`{"driver": "file", "node-name": "x", "filename": "@IMG@", "aio": "bogus"}`)},
		{name: "add: aio not a string", send: add(`{"driver": "file", "node-name": "x", "filename": "@IMG@", "aio": 1}`)},
		{name: "query-named-block-nodes: no aio shown", send: bcQueryNodes},
		{name: "reopen: changing aio", send: bcCmd("blockdev-reopen", `{"options": [{"driver": "file", "node-name": "u", "filename": "@IMG@", "aio": "threads", "locking": "off"}]}`)},
		{name: "blockdev-del r", send: bcCmd("blockdev-del", `{"node-name": "r"}`)},
		{name: "blockdev-del n", send: bcCmd("blockdev-del", `{"node-name": "n"}`)},
		{name: "blockdev-del u", send: bcCmd("blockdev-del", `{"node-name": "u"}`)},
		{name: "blockdev-del ud", send: bcCmd("blockdev-del", `{"node-name": "ud"}`)},
		{name: "blockdev-del t", send: bcCmd("blockdev-del", `{"node-name": "t"}`)},
		{name: "query-named-block-nodes: none", send: bcQueryNodes},
		{name: "fds back to the baseline", kind: confFdCheck},
	}
	runConformanceWith(t, bcSetup(img), bcSteps(steps, "@IMG@", img))
}
