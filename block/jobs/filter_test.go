package jobs

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/internal/fdtest"
)

// TestJobFilters: a stream and an intermediate commit with their QEMU
// filter nodes (copy-on-read above the stream's top, commit_top above
// the commit's), a guest writing through its backend all along. While
// the job runs the filter is in the graph where QEMU puts it (the
// guest's backend on copy-on-read; top's backing link through
// commit_top), named as asked or #blockNNN; the guest reads what it
// wrote; at the end, completed or cancelled, the filter is gone and the
// backend and links are back on the nodes they were.
func TestJobFilters(t *testing.T) {
	fdtest.Check(t)
	for _, tc := range []struct {
		job, name string
		cancel    bool
	}{{"stream", "", false}, {"stream", "cor", true}, {"commit", "", false}, {"commit", "ct", true},
		{"active", "", false}, {"active", "mt", true}} {
		t.Run(tc.job+"/"+tc.name+map[bool]string{true: "/cancel"}[tc.cancel], func(t *testing.T) {
			c := newChain(t, "")
			m := NewManager(nil)
			guest := startGuest(t, c.w, readAll(t, c.top), 5)
			var d Driver
			var filterOf func() *block.Node
			switch tc.job {
			case "stream":
				s := &Stream{Graph: c.g, Top: c.top, Base: c.base, Filter: true, FilterName: tc.name}
				d, filterOf = s, func() *block.Node { return c.w.Node() }
			case "commit":
				cm := &Commit{Graph: c.g, Top: c.mid, Base: c.base, Filter: true, FilterName: tc.name}
				d, filterOf = cm, func() *block.Node { return c.top.Child("backing") }
			case "active":
				if err := c.g.SetReadOnly(c.base, false); err != nil {
					t.Fatal(err)
				}
				d = &Mirror{Graph: c.g, Source: c.top, Target: c.base, Base: c.base, Sync: engine.SyncFull,
					BaseWasRO: true, Filter: true, FilterName: tc.name}
				filterOf = func() *block.Node { return c.w.Node() }
			}
			j, err := m.Start(Spec{ID: "j", Type: tc.job, Speed: mib / 2, AutoFinalize: true, AutoDismiss: true}, d)
			if err != nil {
				t.Fatal(err)
			}
			f := filterOf()
			wantDrv := map[string]string{"stream": "copy-on-read", "commit": "commit_top", "active": "mirror_top"}[tc.job]
			if f == nil || f.Driver() != wantDrv || !f.IsFilter() {
				t.Fatalf("no %s filter where QEMU has it: %v", wantDrv, nodeName(f))
			}
			if tc.name != "" && f.Name() != tc.name || tc.name == "" && !strings.HasPrefix(f.Name(), "#block") {
				t.Errorf("filter named %q, asked %q", f.Name(), tc.name)
			}
			if n, ok := c.g.Node(f.Name()); !ok || n != f {
				t.Error("the filter is not in the graph's nodes")
			}
			if err := c.g.Delete(f.Name()); err == nil {
				t.Error("blockdev-del of a running job's filter succeeded")
			}
			time.Sleep(100 * time.Millisecond)
			switch {
			case tc.cancel:
				j.Cancel(true)
			case tc.job == "active":
				j.SetSpeed(0)
				waitStatus(t, j, Ready)
				if err := j.Complete(); err != nil {
					t.Fatal(err)
				}
			default:
				j.SetSpeed(0)
			}
			waitJob(t, j)
			want := guest.finish()
			got := make([]byte, len(want))
			if _, err := c.w.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("the guest's disk differs from what it wrote (%v)", err)
			}
			if _, ok := c.g.Node(f.Name()); ok {
				t.Errorf("filter %s still in the graph", f.Name())
			}
			wantNode := c.top
			if tc.job == "active" && !tc.cancel {
				wantNode = c.base // switched
			}
			if c.w.Node() != wantNode {
				t.Errorf("the backend is on %s, want %s", nodeName(c.w.Node()), nodeName(wantNode))
			}
			wantBacking := c.base
			if tc.cancel || tc.job == "active" {
				wantBacking = c.mid
			}
			if b := c.top.Child("backing"); b != wantBacking {
				t.Errorf("top's backing is %s, want %s", nodeName(b), nodeName(wantBacking))
			}
			if !bytes.Equal(readAll(t, wantNode), want) {
				t.Errorf("%s reads differently from the guest's view", wantNode.Name())
			}
			c.g.Detach(c.w)
		})
	}
}
