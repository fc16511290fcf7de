package block_test

import (
	"testing"

	"minivmm/block"
	"minivmm/internal/jsonval"
	"minivmm/qemuopen"
)

// FuzzBlockdevOptions feeds arbitrary JSON to blockdev-add and
// blockdev-reopen. The registry refuses plain paths, so nothing on the
// host is opened: what is exercised is option checking, which must
// answer with an error, never a panic, and leave no node half-made.
func FuzzBlockdevOptions(f *testing.F) {
	for _, s := range []string{
		`{"driver":"null-co","node-name":"n","size":4096}`,
		`{"driver":"raw","node-name":"r","offset":512,"file":{"driver":"null-co","size":8192}}`,
		`{"driver":"raw","node-name":"r","file":"n"}`,
		`{"driver":"file","node-name":"f","filename":"/dev/fdset/1","cache":{"direct":true}}`,
		`{"driver":"null-co","node-name":"n","detect-zeroes":"unmap","discard":"unmap","read-only":true}`,
		`{"driver":"raw","file":{"driver":"raw","file":{"driver":"null-co"}}}`,
	} {
		f.Add([]byte(s), []byte(`{"driver":"null-co","node-name":"n","size":4096,"read-only":true}`))
	}
	f.Fuzz(func(t *testing.T, add, reopen []byte) {
		reg := qemuopen.New(qemuopen.Config{FdsetOnly: true})
		g := block.NewGraph(reg)
		defer reg.CloseAll()
		defer g.Close()
		if _, err := g.Add(block.Options{"driver": "null-co", "node-name": "n", "size": 4096}); err != nil {
			t.Fatal(err)
		}
		before := len(g.Nodes())
		if v, err := jsonval.Decode(add); err == nil {
			if m, ok := v.(map[string]any); ok {
				if _, err := g.Add(block.Options(m)); err != nil && len(g.Nodes()) != before {
					t.Fatalf("failed Add left %d nodes (had %d): %v", len(g.Nodes()), before, err)
				}
			}
		}
		if v, err := jsonval.Decode(reopen); err == nil {
			if m, ok := v.(map[string]any); ok {
				g.Reopen([]block.Options{m})
			}
		}
		for _, n := range g.Nodes() {
			n.Info()
		}
	})
}
