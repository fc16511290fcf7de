package nbd

import "testing"

func TestInlineGate(t *testing.T) {
	for _, tc := range []struct {
		name string
		slow []bool // outcomes of the requests served inline, in order
		open bool   // whether the next may be inline
	}{
		{"none slow", []bool{false, false, false, false}, true},
		{"one slow in a fast stream", []bool{true, false, false, false, false, false, false, false, true, false}, true},
		{"two slow of 8", []bool{true, false, false, true, false, false, false}, true},
		{"three slow of 8", []bool{true, false, false, true, false, false, true}, false},
		{"three slow in a row", []bool{false, true, true, true}, false},
		{"three slow, 8 apart", []bool{true, false, false, false, false, false, false, false, true, false, false, false, false, false, false, false, true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g inlineGate
			for i, slow := range tc.slow {
				if !g.open() {
					t.Fatalf("request %d not let inline", i)
				}
				g.served(slow)
			}
			if got := g.open(); got != tc.open {
				t.Fatalf("open after %v = %v, want %v", tc.slow, got, tc.open)
			}
		})
	}
}

// TestInlineGateBackoff: after backing off, inlineBackoff requests go to
// workers, then the reader tries again with a clean record.
func TestInlineGateBackoff(t *testing.T) {
	var g inlineGate
	for range inlineSlowOf8 {
		g.open()
		g.served(true)
	}
	for i := range inlineBackoff {
		if g.open() {
			t.Fatalf("request %d of the back-off let inline", i)
		}
	}
	for i := range inlineSlowOf8 - 1 {
		if !g.open() {
			t.Fatalf("request %d after the back-off not let inline", i)
		}
		g.served(true)
	}
	if !g.open() {
		t.Fatal("back-off again before inlineSlowOf8 slow requests")
	}
}
