package main

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// TestJobDrainLikeQEMU plays drained sections over a running commit job
// on qemu-system-x86_64 and on minivmm and compares the events each
// command brings: a refused snapshot of the job's node drains twice
// (QEMU's transaction drains everything, then the node), so the job goes
// paused and back twice before the refusal; a snapshot of an unrelated
// node drains everything once, and so does stop (after its STOP); a
// blockdev-add and blockdev-del of another node do not reach the job; a
// job the user paused shows nothing for a drain. The chain is large
// enough that the chunk a QEMU job copies each time a drain wakes it (at
// speed 1) never finishes it. Then a stream of a -drive: its implicit
// copy-on-read filter is listed among the nodes, query-block shows the
// device's node and chain through it.
func TestJobDrainLikeQEMU(t *testing.T) {
	fdtest.Check(t)
	needTools(t, "qemu-img", "qemu-io", "qemu-system-x86_64")
	script := []string{
		`{"execute":"qmp_capabilities"}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"base","read-only":true,"file":{"driver":"file","node-name":"basef","filename":"DIR/base.qcow2"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"mid","read-only":true,"backing":"base","file":{"driver":"file","node-name":"midf","filename":"DIR/mid.qcow2"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"top","backing":"mid","file":{"driver":"file","node-name":"topf","filename":"DIR/top.qcow2"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"other","file":{"driver":"file","node-name":"otherf","filename":"DIR/other.qcow2"}}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"mid","base-node":"base","speed":1}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"node-name":"mid","snapshot-file":"DIR/ov.qcow2","mode":"existing"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"node-name":"top","snapshot-file":"DIR/ov.qcow2","mode":"existing"}}`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"node-name":"other","snapshot-file":"DIR/ov.qcow2","snapshot-node-name":"ov","mode":"existing"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"mid"}}`,
		`{"execute":"stop"}`,
		`{"execute":"cont"}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"other2","file":{"driver":"file","node-name":"other2f","filename":"DIR/other.qcow2","locking":"off"},"read-only":true}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"other2"}}`,
		`{"execute":"block-job-pause","arguments":{"device":"j"}}`,
		`wait paused`,
		`{"execute":"blockdev-snapshot-sync","arguments":{"node-name":"mid","snapshot-file":"DIR/ov.qcow2","mode":"existing"}}`,
		`{"execute":"block-job-resume","arguments":{"device":"j"}}`,
		`wait running`,
		`{"execute":"block-job-cancel","arguments":{"device":"j"}}`,
		`wait null`,

		// A stream of a -drive: its implicit copy-on-read filter is in
		// the graph, and query-block looks through it.
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"d0","speed":1}}`,
		`block`, `nodes`,
		`{"execute":"block-job-cancel","arguments":{"device":"s"}}`,
		`wait null`,
		`block`, `nodes`,
	}
	ref := t.TempDir()
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(ref, "base.qcow2"), "64M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(ref, "mid.qcow2"))
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", filepath.Join(ref, "top.qcow2"))
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(ref, "other.qcow2"), "1M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(ref, "ov.qcow2"), "1M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(ref, "dbase.qcow2"), "64M")
	mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "dbase.qcow2", "-F", "qcow2", filepath.Join(ref, "dtop.qcow2"))
	mustRun(t, "qemu-io", "-c", "write -P 3 0 16M", filepath.Join(ref, "dbase.qcow2"))
	mustRun(t, "qemu-io", "-c", "write -P 1 0 8M", filepath.Join(ref, "base.qcow2"))
	mustRun(t, "qemu-io", "-c", "write -P 2 4M 32M", filepath.Join(ref, "mid.qcow2"))
	play := func(bin string) []string {
		dir := copyImages(t, ref, []string{"base", "mid", "top", "other", "ov", "dbase", "dtop"})
		p := qmptest.Start(t, bin, nil, "-drive", "if=none,id=d0,node-name=drive0,format=qcow2,file="+filepath.Join(dir, "dtop.qcow2"))
		c := qmptest.Dial(t, p.Sock)
		defer c.Close()
		// Each command's entry: its reply, then the events that came
		// with it; "wait" adds the events up to the one it names to the
		// entry before it (a job pauses asynchronously after
		// block-job-pause's reply in minivmm, before it in QEMU).
		var got []string
		events := func() (out string) {
			ev, _ := c.Drain()
			for _, e := range ev {
				// QEMU's RESUME at start-up may come late: not compared.
				if e["event"] != "RESUME" {
					out += " " + jobEvent(e) + ";"
				}
			}
			return out
		}
		for _, cmd := range script {
			switch cmd {
			case "block":
				// Each device's node, chain depth and the images of its chain.
				var parts []string
				for _, e := range c.Execute("query-block", nil)["return"].([]any) {
					in := e.(map[string]any)["inserted"].(map[string]any)
					p := jsonString(in["node-name"]) + " depth=" + jsonString(in["backing_file_depth"])
					for img, ok := in["image"].(map[string]any); ok; img, ok = img["backing-image"].(map[string]any) {
						p += " " + filepath.Base(jsonString(img["filename"]))
					}
					parts = append(parts, p)
				}
				got = append(got, strings.Join(parts, ", ")+" |"+events())
				continue
			case "nodes":
				var parts []string
				for _, e := range c.Execute("query-named-block-nodes", map[string]any{"flat": true})["return"].([]any) {
					m := e.(map[string]any)
					// The format nodes only, and not ov: QEMU frees the
					// overlay of a snapshot of a node nothing uses (and
					// its file), which minivmm's snapshot keeps open.
					if m["drv"] == "file" || m["node-name"] == "ov" {
						continue
					}
					parts = append(parts, generatedName.ReplaceAllString(m["node-name"].(string), "#block")+":"+jsonString(m["drv"]))
				}
				slices.Sort(parts)
				got = append(got, strings.Join(parts, " ")+" |"+events())
				continue
			}
			if status, ok := strings.CutPrefix(cmd, "wait "); ok {
				last := len(got) - 1
				for !strings.Contains(got[last], "JOB_STATUS_CHANGE "+status) {
					e := c.Event("JOB_STATUS_CHANGE", 20*time.Second)
					got[last] += events() + " " + jobEvent(e) + ";"
				}
				got = append(got, "")
				continue
			}
			c.Send(strings.ReplaceAll(cmd, "DIR", dir))
			r := jobReply(c.Reply())
			// The events that came before its reply.
			got = append(got, strings.ReplaceAll(r, dir, "DIR")+" |"+events())
		}
		quitAndWait(t, c, p)
		return got
	}
	qemu := play(qmptest.QEMUBinary)
	vmm := play(binary)
	for i := range script {
		if testing.Verbose() {
			t.Logf("%s\n  qemu:    %s\n  minivmm: %s", script[i], qemu[i], vmm[i])
		}
		if qemu[i] != vmm[i] {
			t.Errorf("%s\n  qemu:    %s\n  minivmm: %s", script[i], qemu[i], vmm[i])
		}
	}
}
