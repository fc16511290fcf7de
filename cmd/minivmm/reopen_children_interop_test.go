package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// TestReopenChildrenLikeQEMU plays one QMP script on qemu-system-x86_64
// and on minivmm, each over its own copy of the images (made by
// qemu-img): blockdev-reopen changing a node's file and backing children,
// QEMU's refusals, and backing_file_depth through a three-image chain.
// Every reply (its return, or its error class and text) must be QEMU's;
// for query-named-block-nodes, each node's name, driver and
// backing_file_depth.
func TestReopenChildrenLikeQEMU(t *testing.T) {
	fdtest.Check(t)
	needTools(t, "qemu-img", "qemu-system-x86_64")
	script := []string{
		`{"execute":"qmp_capabilities"}`,
		`{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f","filename":"@DIR@/plain.qcow2"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f2","filename":"@DIR@/p2.qcow2"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f2ro","filename":"@DIR@/p2.qcow2","read-only":true}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"qc0","file":"f"}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"f","read-only":true}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"f"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"f2"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"f2ro"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"nope"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"f","backing":"nope"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"qc0"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"f"}]}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"f3","filename":"@DIR@/p3.qcow2"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"qc3","file":"f3"}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"f","backing":"qc3"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc3","file":"f3","backing":"qc0"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc3","file":"f3","backing":"qc3"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"f"}]}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"qc3"}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"qc0","file":"f","backing":null}]}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"qc3"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r","file":"f2"}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"raw","node-name":"r","file":"f3"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"raw","node-name":"r","file":"f3","backing":null}]}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"f2"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"ft","filename":"@DIR@/top.qcow2"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"fm","filename":"@DIR@/mid.qcow2"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"fb","filename":"@DIR@/base.qcow2"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"base","file":"fb"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"mid","file":"fm","backing":"base"}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"top","file":"ft","backing":"mid"}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"top","file":"ft"}]}}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"top","file":"ft","backing":"base"}]}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"top","file":"ft","backing":null}]}}`,
		`{"execute":"query-named-block-nodes"}`,
	}
	play := func(name string, start func() string) []string {
		dir := t.TempDir()
		for _, img := range [][]string{
			{"plain.qcow2"}, {"p2.qcow2"}, {"p3.qcow2"}, {"base.qcow2"},
			{"mid.qcow2", "-b", "base.qcow2", "-F", "qcow2"}, {"top.qcow2", "-b", "mid.qcow2", "-F", "qcow2"},
		} {
			args := append([]string{"create", "-q", "-f", "qcow2"}, img[1:]...)
			args = append(args, filepath.Join(dir, img[0]), "1M")
			if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img %v: %v\n%s", args, err, out)
			}
		}
		c := qmptest.Dial(t, start())
		defer c.Close()
		var got []string
		for _, cmd := range script {
			c.Send(strings.ReplaceAll(cmd, "@DIR@", dir))
			got = append(got, summarize(c.Reply()))
		}
		return got
	}
	qemu := play("qemu", func() string { s, _ := qmptest.StartQEMU(t); return s })
	vmm := play("minivmm", func() string { return startVMM(t, nil).Sock })
	for i := range script {
		if qemu[i] != vmm[i] {
			t.Errorf("%s\n  qemu:    %s\n  minivmm: %s", script[i], qemu[i], vmm[i])
		}
	}
}

// summarize is what the test compares of a reply.
func summarize(r map[string]any) string {
	if e, ok := r["error"].(map[string]any); ok {
		return fmt.Sprintf("error %v: %v", e["class"], e["desc"])
	}
	if nodes, ok := r["return"].([]any); ok {
		var parts []string
		for _, n := range nodes {
			m := n.(map[string]any)
			parts = append(parts, fmt.Sprintf("%v(%v depth %v)", m["node-name"], m["drv"], m["backing_file_depth"]))
		}
		return strings.Join(parts, " ")
	}
	b, _ := json.Marshal(r["return"])
	return string(b)
}
