package svg

import (
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"
)

// wellFormed fails t unless doc parses as XML.
func wellFormed(t *testing.T, doc string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(doc))
	for {
		_, err := d.Token()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatalf("not well-formed XML: %v\n%s", err, doc)
		}
	}
}

func TestRender(t *testing.T) {
	for _, tc := range []struct {
		name  string
		chart Chart
		bars  int // <rect> with a <title>
		want  []string
	}{
		{
			name: "linear with whiskers",
			chart: Chart{Title: "IOPS <raw>", YLabel: "req/s", Groups: []string{"d=1", "d=8"}, Series: []string{"minivmm", "qemu-img"},
				Values: map[string]map[string]Bar{
					"minivmm":  {"d=1": {100, 90, 110}, "d=8": {300, 250, 320}},
					"qemu-img": {"d=1": {20, 20, 20}},
				}},
			bars: 3,
			want: []string{"IOPS &lt;raw&gt;", "minivmm d=8: 300", "<path"},
		},
		{
			name: "log axis",
			chart: Chart{Title: "latency", Log: true, Groups: []string{"a", "b"}, Series: []string{"s"},
				Values: map[string]map[string]Bar{"s": {"a": {1e-7, 1e-7, 1e-7}, "b": {2e-3, 1e-3, 3e-3}}}, Note: "qemu not installed"},
			bars: 2,
			want: []string{"1e-08", "0.01", "qemu not installed"},
		},
		{name: "empty", chart: Chart{Title: "nothing", Groups: []string{"a"}, Series: []string{"s"}}, bars: 0},
		{
			name: "NaN skipped",
			chart: Chart{Title: "n", Groups: []string{"a"}, Series: []string{"s"},
				Values: map[string]map[string]Bar{"s": {"a": {math.NaN(), 0, 0}}}},
			bars: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.chart.Render()
			wellFormed(t, doc)
			if n := strings.Count(doc, "<title>"); n != tc.bars {
				t.Errorf("%d bars, want %d", n, tc.bars)
			}
			if strings.Contains(doc, "NaN") || strings.Contains(doc, "Inf") {
				t.Errorf("NaN/Inf in output:\n%s", doc)
			}
			for _, w := range tc.want {
				if !strings.Contains(doc, w) {
					t.Errorf("missing %q in\n%s", w, doc)
				}
			}
		})
	}
}

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		in    string
		width int
		want  string
	}{
		{"QMP blockdev-reopen x2", 10, "QMP|blockdev-reopen|x2"},
		{"read d=1", 20, "read d=1"},
		{"", 10, ""},
		{"a b c d", 3, "a b|c d"},
	} {
		if got := strings.Join(wrap(tc.in, tc.width), "|"); got != tc.want {
			t.Errorf("wrap(%q, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
	}
}

func TestFormat(t *testing.T) {
	c := Chart{Title: "t", Log: true, Groups: []string{"g"}, Series: []string{"s"},
		Values: map[string]map[string]Bar{"s": {"g": {Value: 2e-6}}},
		Format: func(v float64) string { return "<" + trim(v*1e6) + "us>" }}
	doc := c.Render()
	wellFormed(t, doc)
	for _, w := range []string{"&lt;1us&gt;", "&lt;10us&gt;"} {
		if !strings.Contains(doc, w) {
			t.Errorf("missing tick %q in\n%s", w, doc)
		}
	}
	if strings.Contains(doc, "e+") {
		t.Errorf("axis runs decades past the only bar:\n%s", doc)
	}
}

func TestColors(t *testing.T) {
	c := Chart{Title: "t", Groups: []string{"g"}, Series: []string{"a", "b"},
		Values: map[string]map[string]Bar{"a": {"g": {Value: 1}}, "b": {"g": {Value: 2}}},
		Colors: map[string]string{"b": "#abcdef"}}
	doc := c.Render()
	if strings.Count(doc, `fill="#abcdef"`) != 2 || strings.Count(doc, `fill="`+palette[0]+`"`) != 2 {
		t.Errorf("bar and legend colours wrong:\n%s", doc)
	}
}

func TestSet(t *testing.T) {
	var c Chart
	c.Set("s", "g", Bar{Value: 1})
	if c.Values["s"]["g"].Value != 1 {
		t.Fatal("Set did not record the bar")
	}
}

func TestNiceStep(t *testing.T) {
	for _, tc := range []struct{ in, want float64 }{
		{0.7, 1}, {1, 1}, {1.3, 2}, {3, 5}, {7, 10}, {4200, 5000}, {0, 1},
	} {
		if got := niceStep(tc.in); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("niceStep(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
