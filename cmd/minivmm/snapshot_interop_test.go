package main

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// TestSnapshotLikeQEMU plays one QMP script on qemu-system-x86_64 and on
// minivmm, each over its own copy of the images (made by qemu-img), with
// a -drive backend on the base: blockdev-snapshot and transaction, their
// refusals in QEMU's order, a transaction that fails half way (nothing
// changes), and the graph after each step — which node each backend
// uses, and each node's backing_file_depth and read-only flag (the old
// top becomes read-only, its inline file child with it).
func TestSnapshotLikeQEMU(t *testing.T) {
	fdtest.Check(t)
	needTools(t, "qemu-img", "qemu-system-x86_64")
	script := []string{
		`{"execute":"qmp_capabilities"}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"ov","backing":null,"file":{"driver":"file","node-name":"ovf","filename":"@DIR@/ov.qcow2"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"ov2","backing":null,"file":{"driver":"file","filename":"@DIR@/ov2.qcow2"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"haveb","file":{"driver":"file","filename":"@DIR@/haveb.qcow2"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"raw","node-name":"r","file":{"driver":"file","filename":"@DIR@/r.raw"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"ovro","read-only":true,"backing":null,"file":{"driver":"file","filename":"@DIR@/ovro.qcow2"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"xf","filename":"@DIR@/base2.qcow2"}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"d0","overlay":"r"}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"d0","overlay":"xf"}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"d2","overlay":"ovro"}}`,
		`{"execute":"query-block"}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"nope","overlay":"ov"}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"d0","overlay":"nope"}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"d0"}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"d0","overlay":"ov","x":1}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"d0","overlay":"ovf"}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"d0","overlay":"d0"}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"d0","overlay":"haveb"}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"r","overlay":"r"}}`,
		`{"execute":"transaction","arguments":{"actions":[]}}`,
		`{"execute":"transaction","arguments":{"actions":{}}}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"nope","data":{}}]}}`,
		`{"execute":"transaction","arguments":{"actions":[{"data":{}}]}}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"blockdev-snapshot"}]}}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"blockdev-snapshot","data":{"node":"r"}}]}}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"blockdev-snapshot","data":{"node":"r","overlay":"x"},"y":1}]}}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"abort","data":{"x":1}}]}}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"blockdev-snapshot","data":{"node":"d0","overlay":"ov"}}],"properties":{"completion-mode":"grouped"}}}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"blockdev-snapshot","data":{"node":"d0","overlay":"ov"}},{"type":"blockdev-snapshot","data":{"node":"r","overlay":"nope"}}]}}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"blockdev-snapshot","data":{"node":"d0","overlay":"ov"}},{"type":"abort","data":{}}]}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"query-block"}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"d0","overlay":"ov"}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"query-block"}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"drive0","overlay":"ov2"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"drive0"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"ov"}}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"blockdev-snapshot","data":{"node":"d0","overlay":"ov2"}}]}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"query-block"}`,

		`{"execute":"blockdev-snapshot-sync","arguments":{"snapshot-file":"@DIR@/s1.qcow2"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"nope","snapshot-file":"@DIR@/s1.qcow2"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"node-name":"nope","snapshot-file":"@DIR@/s1.qcow2"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"drive0","snapshot-file":"@DIR@/s1.qcow2"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"node-name":"d0","snapshot-file":"@DIR@/s1.qcow2"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"node-name":"drive0","snapshot-file":"@DIR@/s1.qcow2"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"d0","snapshot-file":"@DIR@/s1.qcow2","format":"raw"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"d0","snapshot-file":"@DIR@/s1.qcow2","format":"nope"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"d0","snapshot-file":"@DIR@/s1.qcow2","mode":"nope"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"d0","snapshot-file":"@DIR@/s1.qcow2","snapshot-node-name":"ov"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"d0","snapshot-file":"@DIR@/s1.qcow2","snapshot-node-name":"d0"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"d0","snapshot-file":"@DIR@/nodir/s1.qcow2"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"d0","snapshot-file":"@DIR@/nonexist.qcow2","mode":"existing"}}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"blockdev-snapshot-sync","data":{"device":"d0","snapshot-file":"@DIR@/s2.qcow2","snapshot-node-name":"s2"}},{"type":"abort","data":{}}]}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"device":"d0","snapshot-file":"@DIR@/s1.qcow2","snapshot-node-name":"s1"}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"query-block"}`,
		`{"execute":"transaction","arguments":{"actions":[{"type":"blockdev-snapshot-sync","data":{"node-name":"s1","snapshot-file":"@DIR@/ex.qcow2","snapshot-node-name":"ex","mode":"existing"}},{"type":"blockdev-snapshot-sync","data":{"device":"d1","snapshot-file":"@DIR@/d1s.qcow2","snapshot-node-name":"d1s"}}]}}`,
		`{"execute":"query-named-block-nodes"}`,
		`{"execute":"query-block"}`,
	}
	play := func(start func(dir string) string) []string {
		dir := t.TempDir()
		for _, img := range [][]string{
			{"base.qcow2"}, {"base1.qcow2"}, {"base3.qcow2"}, {"ovro.qcow2"}, {"ov.qcow2"}, {"ov2.qcow2"}, {"ex.qcow2"}, {"haveb.qcow2", "-b", "base2.qcow2", "-F", "qcow2"},
		} {
			if img[0] == "haveb.qcow2" {
				mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "base2.qcow2"), "1M")
			}
			args := append([]string{"create", "-q", "-f", "qcow2"}, img[1:]...)
			args = append(args, filepath.Join(dir, img[0]), "1M")
			mustRun(t, "qemu-img", args...)
		}
		mustRun(t, "qemu-img", "create", "-q", "-f", "raw", filepath.Join(dir, "r.raw"), "1M")
		c := qmptest.Dial(t, start(dir))
		defer c.Close()
		var got []string
		for _, cmd := range script {
			c.Send(strings.ReplaceAll(cmd, "@DIR@", dir))
			got = append(got, strings.ReplaceAll(summarizeGraph(c.Reply()), dir, "@DIR@"))
		}
		c.Close()
		// The overlay's header: what qemu-img reads of the chain made.
		// (s1 and s2 are not compared: their old top had a live backing
		// its header does not name, and QEMU writes a json: backing name
		// its own tools cannot open.)
		for _, img := range []string{"d1s.qcow2"} {
			out, err := exec.Command("qemu-img", "info", "-U", "--backing-chain", filepath.Join(dir, img)).CombinedOutput()
			if err != nil {
				t.Fatalf("qemu-img info %s: %v\n%s", img, err, out)
			}
			var keep []string
			for _, l := range strings.Split(string(out), "\n") {
				if !strings.HasPrefix(l, "disk size:") {
					keep = append(keep, l)
				}
			}
			got = append(got, strings.ReplaceAll(strings.Join(keep, "\n"), dir, "@DIR@"))
			if out, err := exec.Command("qemu-img", "check", "-U", filepath.Join(dir, img)).CombinedOutput(); err != nil {
				t.Errorf("qemu-img check %s: %v\n%s", img, err, out)
			}
		}
		return got
	}
	drives := func(dir string) []string {
		return []string{
			"-drive", "if=none,id=d0,node-name=drive0,format=qcow2,file=" + filepath.Join(dir, "base.qcow2"),
			"-drive", "if=none,id=d1,node-name=drive1,format=qcow2,file=" + filepath.Join(dir, "base1.qcow2"),
			"-drive", "if=none,id=d2,node-name=drive2,format=qcow2,file=" + filepath.Join(dir, "base3.qcow2"),
		}
	}
	qemu := play(func(dir string) string { s, _ := qmptest.StartQEMU(t, drives(dir)...); return s })
	vmm := play(func(dir string) string { return startVMM(t, nil, drives(dir)...).Sock })
	script = append(script, "qemu-img info --backing-chain d1s.qcow2")
	for i := range script {
		if testing.Verbose() {
			t.Logf("%s\n  qemu: %s", script[i], qemu[i])
		}
		if qemu[i] != vmm[i] {
			t.Errorf("%s\n  qemu:    %s\n  minivmm: %s", script[i], qemu[i], vmm[i])
		}
	}
}

// summarizeGraph is what the snapshot tests compare of a reply: errors
// whole; of nodes, name (generated ones masked), depth and read-only
// flag; of backends, the node each uses.
func summarizeGraph(r map[string]any) string {
	list, ok := r["return"].([]any)
	if !ok || len(list) == 0 {
		return summarize(r)
	}
	var parts []string
	for _, e := range list {
		m := e.(map[string]any)
		if _, node := m["drv"]; !node && m["inserted"] == nil {
			b, _ := json.Marshal(list) // neither nodes nor backends: whole
			return string(b)
		}
		if in, ok := m["inserted"].(map[string]any); ok {
			parts = append(parts, m["device"].(string)+"->"+in["node-name"].(string)+" ro "+jsonString(in["ro"]))
			continue
		}
		name, _ := m["node-name"].(string)
		if strings.HasPrefix(name, "#") {
			name = "#"
		}
		parts = append(parts, name+" "+m["drv"].(string)+" depth "+jsonString(m["backing_file_depth"])+" ro "+jsonString(m["ro"]))
	}
	// Sorted: where QEMU lists a backing file opened from an image's
	// header among the nodes is not what these tests are about.
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func jsonString(v any) string { return fmt.Sprint(v) }

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}
