package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"minivmm/internal/qmptest"
)

// TestNBDServerQMPLikeQSD plays the same NBD server and export commands
// on qemu-storage-daemon's monitor and minivmm's: replies and
// BLOCK_EXPORT_DELETED events must agree.
func TestNBDServerQMPLikeQSD(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-storage-daemon")
	type step struct {
		cmd    string
		args   map[string]any
		events int // BLOCK_EXPORT_DELETED events the step causes
	}
	unix := func(dir string) map[string]any {
		return map[string]any{"type": "unix", "data": map[string]any{"path": filepath.Join(dir, "nbd.sock")}}
	}
	nbd := func(extra map[string]any) map[string]any {
		a := map[string]any{"type": "nbd", "id": "e", "node-name": "d"}
		for k, v := range extra {
			a[k] = v
		}
		return a
	}
	script := func(dir string) []step {
		return []step{
			{"nbd-server-stop", nil, 0},
			{"block-export-add", nbd(nil), 0},
			{"nbd-server-add", map[string]any{"device": "d"}, 0},
			{"nbd-server-remove", map[string]any{"name": "d"}, 0},
			{"nbd-server-start", map[string]any{"addr": unix(dir), "tls-creds": "nope"}, 0},
			{"nbd-server-start", map[string]any{"addr": unix(dir), "max-connections": -1}, 0},
			{"nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{}}}, 0},
			{"nbd-server-start", map[string]any{"addr": unix(dir + "/no/such")}, 0},
			{"nbd-server-start", map[string]any{"addr": unix(dir)}, 0},
			{"nbd-server-start", map[string]any{"addr": unix(dir)}, 0},
			{"block-export-add", nbd(nil), 0},
			{"block-export-add", nbd(map[string]any{"id": "e2"}), 0},
			{"block-export-add", nbd(map[string]any{"id": "e2", "name": "x", "description": strings.Repeat("y", 4097)}), 0},
			{"block-export-add", nbd(map[string]any{"id": "e2", "name": strings.Repeat("x", 4097)}), 0},
			{"block-export-add", nbd(map[string]any{"id": "e2", "node-name": "ro", "writable": true}), 0},
			{"block-export-add", nbd(map[string]any{"id": "e2", "name": "x", "bitmaps": []any{"b0"}}), 0},
			{"block-export-add", nbd(map[string]any{"id": "e2", "name": "x", "bogus": 1}), 0},
			{"block-export-add", nbd(map[string]any{"id": "e2", "name": "x", "node-name": "nope"}), 0},
			{"block-export-add", nbd(map[string]any{"id": "e2", "name": "x", "writable": true, "allocation-depth": true, "description": "hello"}), 0},
			{"nbd-server-add", map[string]any{"device": "ro"}, 0},
			{"nbd-server-add", map[string]any{"device": "ro"}, 0},
			{"nbd-server-add", map[string]any{"device": "ro", "name": "r2", "writable": true}, 0},
			{"query-block-exports", nil, 0},
			{"nbd-server-remove", map[string]any{"name": "nope"}, 0},
			{"nbd-server-remove", map[string]any{"name": "ro"}, 1},
			{"nbd-server-remove", map[string]any{"name": "e2", "mode": "hard"}, 1},
			{"nbd-server-stop", nil, 2},
			{"query-block-exports", nil, 0},
			{"nbd-server-stop", nil, 0},
			{"nbd-server-start", map[string]any{"addr": map[string]any{"type": "inet", "data": map[string]any{"host": "127.0.0.1", "port": "0"}}}, 0},
			{"block-export-add", nbd(nil), 0},
			{"blockdev-del", map[string]any{"node-name": "d"}, 0},
			{"nbd-server-stop", nil, 1},
			{"blockdev-del", map[string]any{"node-name": "d"}, 0},
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
			var ids []string
			for i := 0; i < s.events; i++ {
				ev := c.Event("BLOCK_EXPORT_DELETED", 5*time.Second)
				ids = append(ids, fmt.Sprint(ev["data"]))
			}
			slices.Sort(ids)
			if len(ids) > 0 {
				line += " events " + strings.Join(ids, " ")
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
