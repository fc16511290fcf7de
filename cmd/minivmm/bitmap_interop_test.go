package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/internal/qmptest"
)

// TestDirtyBitmapsLikeQSD plays the same dirty bitmap commands, writes
// (qemu-io through an NBD export) and bitmap exports on
// qemu-storage-daemon, qemu-system-x86_64 -machine none and minivmm: the QMP replies, the bitmaps
// query-named-block-nodes shows, and what nbdinfo and qemu-img read of
// the exported bitmaps must agree. minivmm's fd count is back to its
// baseline once the clients are gone and the exports deleted.
func TestDirtyBitmapsLikeQSD(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-io", "qemu-storage-daemon", "qemu-system-x86_64", "nbdinfo")
	type step struct {
		cmd  string // a QMP command, or "!write", "!map", "!fds"
		args map[string]any
	}
	q := func(cmd string, kv ...any) step {
		args := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			args[kv[i].(string)] = kv[i+1]
		}
		return step{cmd, args}
	}
	bm := func(op, node, name string, kv ...any) step {
		return q("block-dirty-bitmap-"+op, append([]any{"node", node, "name", name}, kv...)...)
	}
	action := func(typ string, kv ...any) map[string]any {
		data := map[string]any{}
		for i := 0; i+1 < len(kv); i += 2 {
			data[kv[i].(string)] = kv[i+1]
		}
		return map[string]any{"type": typ, "data": data}
	}
	tx := func(actions ...map[string]any) step {
		list := make([]any, len(actions))
		for i, a := range actions {
			list[i] = a
		}
		return q("transaction", "actions", list)
	}
	query := q("query-named-block-nodes", "flat", true)
	script := func(dir string) []step {
		return []step{
			q("nbd-server-start", "addr", map[string]any{"type": "unix", "data": map[string]any{"path": filepath.Join(dir, "nbd.sock")}}),
			bm("add", "q", "b0", "granularity", 4096),
			bm("add", "q", "b1"),
			bm("add", "q", "b0"),
			bm("add", "q", ""),
			bm("add", "nope", "x"),
			bm("add", "q", "g", "granularity", 1000),
			bm("add", "q", "g", "granularity", 256),
			bm("add", "q", "g", "granularity", 1<<32),
			bm("add", "q", "g", "granularity", -1),
			bm("add", "q", strings.Repeat("x", 1024)),
			bm("add", "r", "p", "persistent", true),
			bm("add", "r", "rb", "granularity", 512, "disabled", true),
			bm("add", "f", "fb", "persistent", false),
			bm("add", "q", "gone"),
			bm("remove", "q", "gone"),
			bm("remove", "q", "gone"),
			bm("remove", "nope", "gone"),
			bm("clear", "q", "zz"),
			bm("enable", "nope", "zz"),
			query,
			q("block-export-add", "type", "nbd", "id", "w", "node-name", "q", "name", "w", "writable", true),
			{"!write", nil},
			query,
			bm("disable", "q", "b1"),
			q("block-dirty-bitmap-merge", "node", "q", "target", "b0", "bitmaps", []any{"zz"}),
			q("block-dirty-bitmap-merge", "node", "q", "target", "b0", "bitmaps", []any{map[string]any{"node": "r", "name": "rb"}}),
			q("block-dirty-bitmap-merge", "node", "q", "target", "b0", "bitmaps", []any{map[string]any{"node": "f"}}),
			q("block-dirty-bitmap-merge", "node", "q", "target", "b0", "bitmaps", []any{3}),
			q("block-dirty-bitmap-merge", "node", "q", "target", "g", "bitmaps", []any{"b0"}),
			bm("add", "q", "m", "granularity", 65536, "disabled", true),
			q("block-dirty-bitmap-merge", "node", "q", "target", "m", "bitmaps", []any{"b0", map[string]any{"node": "q", "name": "b1"}}),
			query,
			// Failed transactions change nothing; the last one stands.
			tx(action("block-dirty-bitmap-add", "node", "q", "name", "t1"),
				action("block-dirty-bitmap-clear", "node", "q", "name", "b0"),
				action("block-dirty-bitmap-disable", "node", "q", "name", "m"),
				action("block-dirty-bitmap-remove", "node", "q", "name", "m"),
				action("block-dirty-bitmap-clear", "node", "q", "name", "m")),
			tx(action("block-dirty-bitmap-merge", "node", "q", "target", "m", "bitmaps", []any{"b1"}),
				action("block-dirty-bitmap-enable", "node", "q", "name", "m"),
				action("abort")),
			q("transaction", "actions", []any{action("block-dirty-bitmap-add", "node", "q", "name", "t1")},
				"properties", map[string]any{"completion-mode": "grouped"}),
			query,
			tx(action("block-dirty-bitmap-add", "node", "q", "name", "t1", "granularity", 65536),
				action("block-dirty-bitmap-merge", "node", "q", "target", "t1", "bitmaps", []any{"b0"}),
				action("block-dirty-bitmap-disable", "node", "q", "name", "t1"),
				action("block-dirty-bitmap-remove", "node", "q", "name", "m")),
			query,
			// Exports: an enabled bitmap of a writable node is refused
			// to a read-only export by name, not by node and name.
			q("block-export-del", "id", "w"),
			q("block-export-add", "type", "nbd", "id", "r", "node-name", "q", "name", "r", "bitmaps", []any{"b0", "b1"}),
			q("block-export-add", "type", "nbd", "id", "r", "node-name", "q", "name", "r", "bitmaps", []any{"zz"}),
			q("block-export-add", "type", "nbd", "id", "r", "node-name", "q", "name", "r", "bitmaps", []any{map[string]any{"node": "q", "name": "zz"}}),
			q("block-export-add", "type", "nbd", "id", "r", "node-name", "q", "name", "r", "allocation-depth", true,
				"bitmaps", []any{"b1", map[string]any{"node": "q", "name": "b0"}, "t1"}),
			bm("remove", "q", "b1"),
			bm("clear", "q", "b1"),
			bm("enable", "q", "b1"),
			q("block-dirty-bitmap-merge", "node", "q", "target", "b1", "bitmaps", []any{"t1"}),
			q("block-dirty-bitmap-merge", "node", "q", "target", "g", "bitmaps", []any{"b1"}),
			tx(action("block-dirty-bitmap-clear", "node", "q", "name", "b0")),
			q("block-export-add", "type", "nbd", "id", "r2", "node-name", "q", "name", "r2", "bitmaps", []any{"b1"}),
			query,
			{"!map", nil},
			q("block-export-del", "id", "r"),
			{"!fds", nil},
			bm("remove", "q", "b1"),
			query,
		}
	}
	play := func(kind string) (transcript []string) {
		dir := t.TempDir()
		img := filepath.Join(dir, "d.qcow2")
		mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "10M")
		mustRun(t, "qemu-io", "-c", "write -q -P 1 0 64k", img)
		mustRun(t, "qemu-img", "create", "-q", "-f", "raw", filepath.Join(dir, "r.raw"), "1000000")
		blockdevs := []string{
			"driver=file,node-name=f,filename=" + img,
			"driver=qcow2,node-name=q,file=f",
			"driver=file,node-name=r,filename=" + filepath.Join(dir, "r.raw"),
		}
		var c *qmptest.Client
		pid := 0
		switch kind {
		case "qsd":
			c = startQSDBlockdevs(t, dir, blockdevs)
		case "qemu":
			_, args := blockdevArgs(blockdevs)
			sock, _ := qmptest.StartQEMU(t, args...)
			c = qmptest.Dial(t, sock)
			c.Negotiate()
		default:
			_, args := blockdevArgs(blockdevs)
			p := startVMM(t, nil, args...)
			c = qmptest.Dial(t, p.Sock)
			c.Negotiate()
			pid = p.Pid
		}
		defer c.Close()
		sock := filepath.Join(dir, "nbd.sock")
		base := 0
		for _, s := range script(dir) {
			switch s.cmd {
			case "!write":
				if pid != 0 {
					base = steadyFds(t, pid)
				}
				output(t, "qemu-io", "-f", "raw", "-c", "write -P 2 4k 8k", "-c", "write -z 1M 100k",
					"-c", "discard 2M 64k", "-c", "write -P 3 10485000 760", "-c", "write -P 4 6M 130k",
					"nbd+unix:///w?socket="+sock)
				continue
			case "!map":
				transcript = append(transcript, bitmapMaps(t, sock)...)
				continue
			case "!fds":
				c.Event("BLOCK_EXPORT_DELETED", 5*time.Second)
				if pid != 0 {
					settledFds(t, pid, base, "the bitmap exports' clients")
				}
				continue
			}
			r := c.Execute(s.cmd, s.args)
			if s.cmd == "query-named-block-nodes" {
				r = bitmapsOf(r)
			}
			line := fmt.Sprint(qmptest.Normalize(r))
			transcript = append(transcript, strings.ReplaceAll(fmt.Sprintf("%s %v: %s", s.cmd, s.args, line), dir, "@DIR@"))
		}
		return transcript
	}
	vmm := play("vmm")
	for _, ref := range []string{"qsd", "qemu"} {
		want := play(ref)
		if len(want) != len(vmm) {
			t.Fatalf("transcripts of %d and %d lines:\nminivmm %q\n%s %q", len(vmm), len(want), vmm, ref, want)
		}
		for i := range want {
			if want[i] != vmm[i] {
				t.Errorf("\n  minivmm: %s\n  %-8s %s", vmm[i], ref+":", want[i])
			}
		}
	}
}

// bitmapsOf keeps of a query-named-block-nodes reply each node's name
// and dirty bitmaps (the rest has tests of its own). The qcow2 file
// node's bitmap counts the clusters the format wrote there, metadata
// included, which minivmm's qcow2 places as it likes: its count is left
// out.
func bitmapsOf(r map[string]any) map[string]any {
	list, ok := r["return"].([]any)
	if !ok {
		return r
	}
	var out []any
	for _, n := range list {
		m := n.(map[string]any)
		if m["node-name"] == "f" {
			for _, b := range m["dirty-bitmaps"].([]any) {
				delete(b.(map[string]any), "count")
			}
		}
		out = append(out, map[string]any{"node-name": m["node-name"], "dirty-bitmaps": m["dirty-bitmaps"]})
	}
	return map[string]any{"return": out}
}

// bitmapMaps is what nbdinfo and qemu-img read of export r's bitmaps and
// allocation.
func bitmapMaps(t *testing.T, sock string) []string {
	uri := "nbd+unix:///r?socket=" + sock
	var out []string
	for _, ctx := range []string{"qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1", "qemu:dirty-bitmap:t1", "base:allocation"} {
		out = append(out, "nbdinfo --map="+ctx+"\n"+output(t, "nbdinfo", "--map="+ctx, uri))
	}
	// --list's meta contexts and flags of both exports.
	var keep []string
	for _, l := range strings.Split(output(t, "nbdinfo", "--list", "--content", uri), "\n") {
		if strings.HasPrefix(l, "export=") || strings.HasPrefix(l, "\t\t") || strings.HasPrefix(l, "\tcan_") || strings.Contains(l, "read_only") || strings.HasPrefix(l, "\tcontent:") {
			keep = append(keep, l)
		}
	}
	out = append(out, "nbdinfo --list\n"+strings.Join(keep, "\n"))
	// qemu-img's and minivmm's NBD clients read the bitmap as QEMU's
	// x-dirty-bitmap does (dirty as unallocated), the same from either
	// server.
	for _, ctx := range []string{"qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1", "base:allocation"} {
		opts := "driver=nbd,server.type=unix,server.path=" + sock + ",export=r,x-dirty-bitmap=" + ctx
		want, err := exec.Command("qemu-img", "map", "--output=json", "--image-opts", opts).CombinedOutput()
		if err != nil {
			t.Errorf("qemu-img map x-dirty-bitmap=%s: %v\n%s", ctx, err, want)
		}
		got, err := exec.Command(binary, "img", "map", "--output=json", "--image-opts", opts).CombinedOutput()
		if err != nil || string(got) != string(want) {
			t.Errorf("minivmm img map x-dirty-bitmap=%s: %v\n%s\nqemu-img map:\n%s", ctx, err, got, want)
		}
		out = append(out, "qemu-img map x-dirty-bitmap="+ctx+"\n"+string(want))
	}
	opts := "driver=nbd,server.type=unix,server.path=" + sock + ",export=r,x-dirty-bitmap=qemu:dirty-bitmap:zz"
	if b, err := exec.Command(binary, "img", "map", "--image-opts", opts).CombinedOutput(); err == nil || !strings.Contains(string(b), "requested x-dirty-bitmap qemu:dirty-bitmap:zz not found") {
		t.Errorf("minivmm img map of a context the export lacks: %v\n%s", err, b)
	}
	return out
}
