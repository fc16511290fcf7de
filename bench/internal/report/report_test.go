package report

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		ratio, want float64
		status      Status
	}{
		{5.2, 5, Met}, {5, 5, Met}, {4.9, 5, NotMet}, {math.NaN(), 5, NotMeasured},
	} {
		if got := Check("g", tc.ratio, tc.want, "m").Status; got != tc.status {
			t.Errorf("Check(%v >= %v) = %v, want %v", tc.ratio, tc.want, got, tc.status)
		}
		if got := CheckAtMost("g", tc.want, tc.ratio, "m").Status; got != tc.status {
			t.Errorf("CheckAtMost(%v <= %v) = %v, want %v", tc.want, tc.ratio, got, tc.status)
		}
	}
}

func TestWriteMarkdown(t *testing.T) {
	s := &Section{ID: "open", Title: "Open", Text: "What was timed.", Commands: []string{"go run ./bench/cmd/report -run '^open$'"}}
	tb := s.Table("Open+close:", "case", "time")
	tb.Add("fdset | dup", "1 µs")
	tb.Add("multi\nline")
	s.Charts = []string{"latency.svg"}
	s.Note("qemu-img not installed")
	s.Targets = []Target{Check("fdset open ≤ 1.3x dup", 1/1.1, 1/1.3, "1.10x")}
	bad := &Section{Title: "Broken", Err: errors.New("exec: qemu-img: not found")}
	r := &Report{Title: "minivmm performance", Header: []string{"load average: 1.00"}, Sections: []*Section{s, bad}}
	var b strings.Builder
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{
		"# minivmm performance\n\n- load average: 1.00\n\n",
		"## Targets\n\n| target | measured (median, min–max) | status | note |\n|---|---|---|---|\n| fdset open ≤ 1.3x dup | 1.10x | met |  |\n",
		"## Open\n\nWhat was timed.\n\nProduced by:\n\n```\ngo run ./bench/cmd/report -run '^open$'\n```\n",
		"| case | time |\n|---|---|\n| fdset \\| dup | 1 µs |\n| multi<br>line |  |\n",
		"![latency](latency.svg)\n",
		"- qemu-img not installed\n",
		"## Broken\n\n**This case could not run:** exec: qemu-img: not found\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in\n%s", want, got)
		}
	}
}
