package block

import "testing"

func TestWellFormedID(t *testing.T) {
	for id, want := range map[string]bool{"a": true, "job0": true, "a-b.c_d": true, "": false, "0a": false, "-a": false, "a b": false, "a#": false} {
		if WellFormedID(id) != want {
			t.Errorf("WellFormedID(%q) = %v", id, !want)
		}
	}
}
