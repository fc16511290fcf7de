package qcow2

import (
	"reflect"
	"testing"

	"minivmm/block"
)

// TestJoinOptions: the old options a reopen keeps, as QEMU's
// qcow2_join_options leaves them (iotest 137's sequence among them).
func TestJoinOptions(t *testing.T) {
	for _, c := range []struct {
		old, given, want block.Options
	}{
		{block.Options{"cache-size": "1M"}, block.Options{"l2-cache-size": "512k"}, block.Options{"l2-cache-size": "512k"}},
		{block.Options{"l2-cache-size": "512k"}, block.Options{"cache-size": "1M"}, block.Options{"cache-size": "1M"}},
		{block.Options{"refcount-cache-size": "1M"}, block.Options{"cache-size": "2M", "l2-cache-size": "1M"},
			block.Options{"cache-size": "2M", "l2-cache-size": "1M"}},
		{block.Options{"cache-size": "1M", "lazy-refcounts": "on"}, block.Options{"overlap-check": "all"},
			block.Options{"overlap-check": "all", "lazy-refcounts": "on"}},
		{block.Options{"overlap-check": block.Options{"template": "all", "main-header": "off"}}, block.Options{"overlap-check": "none"},
			block.Options{"overlap-check": "none"}},
		{block.Options{"overlap-check": "none"}, block.Options{"lazy-refcounts": "off"},
			block.Options{"overlap-check": "none", "lazy-refcounts": "off"}},
	} {
		old := c.old.Clone()
		fix := joinOptions(c.given, old)
		for k, v := range c.given {
			old[k] = v
		}
		fix(old)
		if !reflect.DeepEqual(old, c.want) {
			t.Errorf("join %v over %v: %v, want %v", c.given, c.old, old, c.want)
		}
	}
}
