// Package svg draws the report's charts as hand-written SVG: grouped bar
// charts with whiskers for the spread, on a linear or logarithmic axis.
package svg

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Bar is one bar: the median and the spread drawn as a whisker.
type Bar struct {
	Value, Lo, Hi float64
}

// Chart is a grouped bar chart: for each group (a position on the x axis,
// e.g. a queue depth) one bar per series (e.g. minivmm, QEMU).
type Chart struct {
	Title  string
	YLabel string
	Log    bool // logarithmic y axis (for values spanning decades)
	Groups []string
	Series []string
	// Values[series][group]; a missing entry draws no bar.
	Values map[string]map[string]Bar
	Note   string // a line under the chart (e.g. what was not installed)
	// Format labels the y axis ticks (default: compact numbers, 1k, 2.5M).
	Format func(float64) string
	// Colors fixes a series' fill (e.g. "#d62728"); others take the
	// palette in series order.
	Colors map[string]string
}

// color is series si's fill.
func (c *Chart) color(si int) string {
	if col, ok := c.Colors[c.Series[si]]; ok {
		return col
	}
	return palette[si%len(palette)]
}

// Set records the bar of series s in group g.
func (c *Chart) Set(s, g string, b Bar) {
	if c.Values == nil {
		c.Values = map[string]map[string]Bar{}
	}
	if c.Values[s] == nil {
		c.Values[s] = map[string]Bar{}
	}
	c.Values[s][g] = b
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"}

const (
	width   = 760
	height  = 380
	left    = 80
	right   = 20
	top     = 50
	bottom  = 90
	plotW   = width - left - right
	plotH   = height - top - bottom
	legendY = height - 30
)

// Render returns the chart as a standalone SVG document.
func (c *Chart) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" text-anchor="middle">%s</text>`+"\n", width/2, esc(c.Title))

	lo, hi := c.bounds()
	ticks := c.ticks(lo, hi)
	label := c.Format
	if label == nil {
		label = tickLabel
	}
	if len(ticks) > 0 {
		lo, hi = math.Min(lo, ticks[0]), math.Max(hi, ticks[len(ticks)-1])
	}
	y := func(v float64) float64 {
		if c.Log {
			v, lo, hi := math.Log10(math.Max(v, lo)), math.Log10(lo), math.Log10(hi)
			return top + plotH - (v-lo)/(hi-lo)*plotH
		}
		return top + plotH - (v-lo)/(hi-lo)*plotH
	}
	// Axes, grid and tick labels.
	for _, t := range ticks {
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, left+plotW, y(t), y(t))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`+"\n", left-6, y(t), esc(label(t)))
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", left, left+plotW, top+plotH, top+plotH)
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="black"/>`+"\n", left, left, top, top+plotH)
	fmt.Fprintf(&b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+plotH/2, esc(c.YLabel))

	// Bars.
	if n := len(c.Groups); n > 0 && len(c.Series) > 0 {
		gw := float64(plotW) / float64(n)
		bw := gw * 0.8 / float64(len(c.Series))
		for gi, g := range c.Groups {
			gx := float64(left) + gw*float64(gi)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">`, gx+gw/2, top+plotH+16)
			for i, line := range wrap(g, int(gw/7)) {
				fmt.Fprintf(&b, `<tspan x="%.1f" dy="%d">%s</tspan>`, gx+gw/2, min(i, 1)*14, esc(line))
			}
			b.WriteString("</text>\n")
			for si, s := range c.Series {
				bar, ok := c.Values[s][g]
				if !ok || math.IsNaN(bar.Value) {
					continue
				}
				x := gx + gw*0.1 + bw*float64(si)
				yv := y(bar.Value)
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`+"\n",
					x, yv, bw, float64(top+plotH)-yv, c.color(si), esc(s), esc(g), esc(label(bar.Value)))
				if bar.Hi > bar.Lo && !math.IsNaN(bar.Lo) && !math.IsNaN(bar.Hi) {
					cx := x + bw/2
					fmt.Fprintf(&b, `<path d="M%.1f %.1fV%.1fM%.1f %.1fH%.1fM%.1f %.1fH%.1f" stroke="black" fill="none"/>`+"\n",
						cx, y(bar.Lo), y(bar.Hi), cx-bw/4, y(bar.Lo), cx+bw/4, cx-bw/4, y(bar.Hi), cx+bw/4)
				}
			}
		}
	}
	// Legend and note.
	x := left
	for si, s := range c.Series {
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/>`, x, legendY-10, c.color(si))
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", x+16, legendY, esc(s))
		x += 30 + 7*len(s)
	}
	if c.Note != "" {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11" fill="#555">%s</text>`+"\n", left, height-10, esc(c.Note))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// bounds is the range of the values and whiskers to show.
func (c *Chart) bounds() (lo, hi float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for _, g := range c.Groups {
			bar, ok := c.Values[s][g]
			if !ok {
				continue
			}
			for _, v := range []float64{bar.Value, bar.Lo, bar.Hi} {
				if math.IsNaN(v) || (c.Log && v <= 0) {
					continue
				}
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 1) { // nothing to draw
		return 0.1, 1
	}
	if !c.Log {
		lo = 0
	}
	if hi <= lo {
		if c.Log {
			hi = lo * 10
		} else {
			hi = lo + 1
		}
	}
	return lo, hi
}

// ticks are the y-axis tick values: powers of ten on a log axis, else
// about five round steps from zero.
func (c *Chart) ticks(lo, hi float64) []float64 {
	if c.Log {
		// Start a decade below the smallest bar when it sits near a power
		// of ten, so that every bar is visibly above the axis.
		var t []float64
		for e := math.Floor(math.Log10(lo / 2)); e <= math.Ceil(math.Log10(hi)); e++ {
			t = append(t, math.Pow(10, e))
		}
		return t
	}
	step := niceStep(hi / 5)
	var t []float64
	for v := 0.0; v < hi+step; v += step {
		t = append(t, v)
	}
	return t
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

// tickLabel formats an axis value compactly (1k, 2.5M, 0.01).
func tickLabel(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return trim(v/1e9) + "G"
	case a >= 1e6:
		return trim(v/1e6) + "M"
	case a >= 1e3:
		return trim(v/1e3) + "k"
	}
	return trim(v)
}

// wrap breaks s at spaces into lines of about width characters.
func wrap(s string, width int) []string {
	width = max(width, 4)
	var lines []string
	cur := ""
	for _, w := range strings.Fields(s) {
		if cur != "" && len(cur)+1+len(w) > width {
			lines = append(lines, cur)
			cur = w
			continue
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	return append(lines, cur)
}

func trim(v float64) string {
	s := fmt.Sprintf("%.3g", v)
	return s
}

func esc(s string) string { return html.EscapeString(s) }
