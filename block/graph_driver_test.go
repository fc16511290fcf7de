package block_test

import (
	"testing"

	"minivmm/block"
)

// memImage is a tiny in-memory protocol driver's image.
type memImage struct{ b []byte }

func (m *memImage) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m.b[off:]), nil }
func (m *memImage) WriteAt(p []byte, off int64) (int, error) { return copy(m.b[off:], p), nil }
func (m *memImage) Flush() error                             { return nil }
func (m *memImage) Length() (int64, error)                   { return int64(len(m.b)), nil }
func (m *memImage) Close() error                             { return nil }

// TestAddDriver: a driver added to one graph opens nodes there, inline
// children and reopens included, and nowhere else; it never shadows a
// registered driver or another of the graph's.
func TestAddDriver(t *testing.T) {
	g, _ := fixture(t)
	other, _ := fixture(t)
	var opened int
	drv := &block.Driver{Name: "mem", Open: func(o *block.OpenContext) (block.Image, error) {
		opened++
		return &memImage{b: make([]byte, 4096)}, nil
	}}
	if err := g.AddDriver(drv); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mem", "file", "qcow2"} {
		if err := g.AddDriver(&block.Driver{Name: name}); err == nil {
			t.Errorf("a second driver named %q was added", name)
		}
	}
	if _, err := other.Add(opts(t, `{"driver": "mem"}`)); err == nil || err.Error() != "Parameter 'driver' does not accept value 'mem'" {
		t.Errorf("another graph opened the driver: %v", err)
	}
	n, err := g.Add(opts(t, `{"driver": "raw", "node-name": "r", "file": {"driver": "mem"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.Length() != 4096 || opened != 1 {
		t.Errorf("length %d, opened %d times", n.Length(), opened)
	}
	if err := g.Reopen([]block.Options{opts(t, `{"driver": "raw", "node-name": "r", "file": {"driver": "mem"}, "read-only": true}`)}); err != nil {
		t.Errorf("reopen: %v", err)
	}
}
