package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"minivmm/internal/qmptest"
)

// TestQuorumChangeInterop plays x-blockdev-change on a quorum (children
// added and removed, and every refusal) against qemu-storage-daemon 7.2
// and minivmm, and wants the same replies.
func TestQuorumChangeInterop(t *testing.T) {
	needTools(t, "qemu-storage-daemon")
	type step struct {
		cmd  string
		args map[string]any
	}
	change := func(kv ...string) step {
		a := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			a[kv[i]] = kv[i+1]
		}
		return step{"x-blockdev-change", a}
	}
	script := []step{
		change("parent", "q", "node", "f2"),
		change("parent", "q", "node", "f2"),
		change("parent", "q", "node", "f0"),
		change("parent", "q", "child", "children.5"),
		change("parent", "q", "child", "children.0"),
		change("parent", "q", "child", "children.2"),
		change("parent", "q", "node", "f3"),
		change("parent", "q", "child", "children.1"),
		change("parent", "q", "child", "children.2"),
		change("parent", "q", "node", "f0"),
		change("parent", "nosuch", "node", "f1"),
		change("parent", "f1", "node", "f0"),
		change("parent", "f1", "child", "x"),
		change("parent", "q", "node", "nosuch"),
		change("parent", "q"),
		change("parent", "q", "node", "f1", "child", "children.0"),
		change("parent", "v", "node", "f1"),
		change("parent", "v", "child", "children.0"),
		{"blockdev-del", map[string]any{"node-name": "q"}},
		{"blockdev-del", map[string]any{"node-name": "f0"}},
		{"blockdev-del", map[string]any{"node-name": "f3"}},
	}
	play := func(qsd bool) []string {
		dir := t.TempDir()
		var blockdevs []string
		for i := range 6 {
			p := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			blockdevs = append(blockdevs, fmt.Sprintf("driver=file,node-name=f%d,filename=%s", i, p))
		}
		blockdevs = append(blockdevs,
			`{"driver": "quorum", "node-name": "q", "vote-threshold": 1, "children": ["f4"]}`,
			`{"driver": "quorum", "node-name": "v", "vote-threshold": 2, "blkverify": true, "children": ["f5", {"driver": "null-co", "size": 1048576}]}`)
		var c *qmptest.Client
		if qsd {
			c = startQSDBlockdevs(t, dir, blockdevs)
		} else {
			c = startVMMBlockdevs(t, dir, blockdevs)
		}
		defer c.Close()
		var out []string
		for _, s := range script {
			r := c.Execute(s.cmd, s.args)
			line := fmt.Sprintf("%s %v -> ", s.cmd, s.args)
			if e, ok := r["error"].(map[string]any); ok {
				line += fmt.Sprintf("%v: %v", e["class"], e["desc"])
			} else {
				line += fmt.Sprint(r["return"])
			}
			out = append(out, strings.ReplaceAll(line, dir, "DIR"))
		}
		return out
	}
	want, got := play(true), play(false)
	if !slices.Equal(want, got) {
		t.Errorf("qemu-storage-daemon:\n%s\nminivmm:\n%s", strings.Join(want, "\n"), strings.Join(got, "\n"))
	}
}
