package main

import (
	"testing"

	"minivmm/internal/fdtest"
)

// TestConformanceOOB: the oob capability and exec-oob, and fds held by the
// connection across commands, against QEMU 7.2 byte for byte.
func TestConformanceOOB(t *testing.T) {
	fdtest.Check(t)
	steps := []confStep{
		{name: "exec-oob before negotiation", send: `{"exec-oob": "qmp_capabilities", "id": 0}`},
		{name: "qmp_capabilities, enable oob and an unknown one", send: `{"execute": "qmp_capabilities", "arguments": {"enable": ["oob", "x"]}}`},
		{name: "qmp_capabilities, enable oob", send: `{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": "caps"}`},
		{name: "fd baseline", kind: confFdBaseline},
		{name: "qmp_capabilities again, with oob", send: `{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}`},
		{name: "exec-oob of an in-band command", send: `{"exec-oob": "query-status", "id": 1}`},
		{name: "exec-oob of qmp_capabilities", send: `{"exec-oob": "qmp_capabilities"}`},
		{name: "exec-oob of an unknown command", send: `{"exec-oob": "nosuch", "id": 3}`},
		{name: "exec-oob and execute", send: `{"exec-oob": "query-status", "execute": "query-status", "id": 4}`},
		{name: "exec-oob not a string", send: `{"exec-oob": 5}`},
		{name: "exec-oob with arguments", send: `{"exec-oob": "stop", "arguments": {"x": 1}, "id": 6}`},
		{name: "exec-oob null", send: `{"exec-oob": null, "id": 7}`},
		{name: "in-band still works", send: `{"execute": "query-status", "id": 8}`},
		{name: "stop in-band", send: `{"execute": "stop", "id": 9}`},
		{name: "cont in-band", send: `{"execute": "cont", "id": 10}`},
		// An fd sent with a command that does not run keeps: the next
		// command that takes one gets it.
		{name: "exec-oob add-fd with an fd", send: `{"exec-oob": "add-fd", "arguments": {"fdset-id": 1}, "id": 11}`, fd: confRoFd},
		{name: "add-fd takes the held fd", send: `{"execute": "add-fd", "arguments": {"fdset-id": 1}, "id": 12}`, save: "held"},
		{name: "add-fd with none held", send: `{"execute": "add-fd", "arguments": {"fdset-id": 1}, "id": 13}`},
		{name: "query-status with an fd", send: `{"execute": "query-status", "id": 14}`, fd: confRwFd},
		{name: "getfd takes it", send: `{"execute": "getfd", "arguments": {"fdname": "n"}, "id": 15}`},
		{name: "query-fdsets", send: `{"execute": "query-fdsets", "id": 16}`},
		{name: "closefd", send: `{"execute": "closefd", "arguments": {"fdname": "n"}}`},
		{name: "remove-fd", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 1}}`},
		{name: "fds back to the baseline", kind: confFdCheck},
		{name: "quit", send: `{"execute": "quit", "id": "q"}`, kind: confQuitStep},
	}
	runConformance(t, nil, nil, steps)
}
