package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/internal/qmptest"
)

// exportImages makes a writable and a read-only node's images and the
// -blockdev options for both.
func exportImages(t *testing.T) (dir string, blockdevs []string) {
	t.Helper()
	dir = t.TempDir()
	for _, n := range []string{"d", "ro"} {
		mustRun(t, "qemu-img", "create", "-q", "-f", "raw", filepath.Join(dir, n+".raw"), "1M")
	}
	return dir, []string{
		"driver=file,node-name=d,filename=" + filepath.Join(dir, "d.raw"),
		"driver=file,node-name=ro,filename=" + filepath.Join(dir, "ro.raw") + ",read-only=on",
	}
}

// TestExportOptionErrorsLikeQSD: each bad -export gets the message
// qemu-storage-daemon gives its --export.
func TestExportOptionErrorsLikeQSD(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-storage-daemon")
	dir, blockdevs := exportImages(t)
	sock := filepath.Join(dir, "vu.sock")
	base := "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=" + sock
	for _, value := range []string{
		base + ",logical-block-size=1000",
		base + ",logical-block-size=4M",
		base + ",logical-block-size=abc",
		base + ",num-queues=0",
		base + ",num-queues=70000",
		base + ",num-queues=x",
		base + ",writable=maybe",
		base + ",bogus=1",
		base + ",addr.bogus=1",
		"type=vhost-user-blk,id=e,node-name=zz,addr.type=unix,addr.path=" + sock,
		"type=vhost-user-blk,id=e,node-name=ro,addr.type=unix,addr.path=" + sock + ",writable=on",
		"type=vhost-user-blk,id=e,node-name=d,addr.type=inet,addr.host=127.0.0.1,addr.port=0",
		"type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=" + dir + "/no/such/dir/s",
		"type=vhost-user-blk,id=e,node-name=d",
		"type=vhost-user-blk,id=e,node-name=d,addr.path=" + sock,
		"type=vhost-user-blk,id=e@,node-name=d,addr.type=unix,addr.path=" + sock,
		"type=vhost-user-blk,node-name=d,addr.type=unix,addr.path=" + sock,
		"type=foo,id=e",
		"type=nbd,id=e,node-name=d",
	} {
		qsdArgs, vmmArgs := blockdevArgs(blockdevs)
		want := refusal(t, "-export "+value, value, "qemu-storage-daemon", append(qsdArgs, "--export", value)...)
		got := refusal(t, "-export "+value, value, binary, append([]string{"-machine", "none", "-display", "none"}, append(vmmArgs, "-export", value)...)...)
		if got != want || want == "" {
			t.Errorf("-export %s:\n  minivmm: %s\n  qsd:     %s", value, got, want)
		}
	}
}

// TestBlockExportQMPLikeQSD plays the same block export commands on
// qemu-storage-daemon's monitor and minivmm's: the replies and the
// BLOCK_EXPORT_DELETED events must agree.
func TestBlockExportQMPLikeQSD(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-storage-daemon")
	type step struct {
		cmd  string
		args map[string]any
	}
	addr := func(dir, name string) map[string]any {
		return map[string]any{"type": "unix", "path": filepath.Join(dir, name)}
	}
	script := func(dir string) []step {
		add := func(extra map[string]any) step {
			a := map[string]any{"type": "vhost-user-blk", "id": "e", "node-name": "d", "addr": addr(dir, "e.sock"), "writable": true}
			for k, v := range extra {
				if v == nil {
					delete(a, k)
				} else {
					a[k] = v
				}
			}
			return step{"block-export-add", a}
		}
		return []step{
			{"query-block-exports", nil},
			add(nil),
			add(map[string]any{"addr": addr(dir, "e2.sock")}),
			add(map[string]any{"id": "e2", "addr": addr(dir, "e2.sock"), "num-queues": 2, "logical-block-size": 4096}),
			add(map[string]any{"id": "e3", "node-name": "ro", "addr": addr(dir, "e3.sock")}),
			add(map[string]any{"id": "e3", "node-name": "ro", "addr": addr(dir, "e3.sock"), "writable": nil}),
			add(map[string]any{"id": "e4", "addr": map[string]any{"type": "unix"}}),
			add(map[string]any{"id": "e4", "num-queues": 70000}),
			add(map[string]any{"id": "e4", "num-queues": 0}),
			add(map[string]any{"id": "e4", "num-queues": "2"}),
			add(map[string]any{"id": "e4", "logical-block-size": 1000}),
			add(map[string]any{"id": "e4", "logical-block-size": "x"}),
			add(map[string]any{"id": "e4", "bogus": 1}),
			add(map[string]any{"id": "e4", "node-name": "nope"}),
			add(map[string]any{"id": "4e"}),
			add(map[string]any{"id": "e4", "addr": map[string]any{"type": "inet", "host": "127.0.0.1", "port": "0"}}),
			{"block-export-add", map[string]any{"type": "nbd", "id": "e4", "node-name": "d"}},
			{"block-export-add", map[string]any{"type": "bogus", "id": "e4", "node-name": "d"}},
			{"block-export-add", map[string]any{"id": "e4", "node-name": "d"}},
			{"query-block-exports", nil},
			{"blockdev-del", map[string]any{"node-name": "d"}},
			{"block-export-del", map[string]any{"id": "nope"}},
			{"block-export-del", map[string]any{"id": "e", "mode": "sideways"}},
			{"block-export-del", map[string]any{"id": "e"}},
			{"query-block-exports", nil},
			{"block-export-del", map[string]any{"id": "e2", "mode": "hard"}},
			{"block-export-del", map[string]any{"id": "e3"}},
			{"query-block-exports", nil},
			{"blockdev-del", map[string]any{"node-name": "d"}},
		}
	}
	play := func(dial func(dir string, blockdevs []string) *qmptest.Client) []string {
		dir, blockdevs := exportImages(t)
		c := dial(dir, blockdevs)
		defer c.Close()
		var got []string
		for _, s := range script(dir) {
			r := c.Execute(s.cmd, s.args)
			line := fmt.Sprint(qmptest.Normalize(r))
			if s.cmd == "block-export-del" && r["error"] == nil {
				ev := c.Event("BLOCK_EXPORT_DELETED", 5*time.Second)
				line += fmt.Sprint(" event ", ev["data"])
			}
			got = append(got, strings.ReplaceAll(line, dir, "@DIR@"))
		}
		return got
	}
	qsd := play(func(dir string, blockdevs []string) *qmptest.Client { return startQSDBlockdevs(t, dir, blockdevs) })
	vmm := play(func(dir string, blockdevs []string) *qmptest.Client { return startVMMBlockdevs(t, dir, blockdevs) })
	steps := script("@DIR@")
	for i := range qsd {
		if qsd[i] != vmm[i] {
			t.Errorf("%s %v\n  minivmm: %s\n  qsd:     %s", steps[i].cmd, steps[i].args, vmm[i], qsd[i])
		}
	}
}
