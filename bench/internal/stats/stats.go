// Package stats summarises repeated measurements: the median, and the
// spread as min–max and the interquartile range.
package stats

import (
	"fmt"
	"math"
	"slices"
)

// Summary describes a sample of repeated measurements.
type Summary struct {
	N               int
	Min, Q1, Median float64
	Q3, Max         float64
}

// Summarize returns the summary of xs; NaNs are dropped. With no values the
// summary has N == 0 and NaN statistics.
func Summarize(xs []float64) Summary {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		nan := math.NaN()
		return Summary{Min: nan, Q1: nan, Median: nan, Q3: nan, Max: nan}
	}
	slices.Sort(v)
	return Summary{
		N:      len(v),
		Min:    v[0],
		Q1:     Quantile(v, 0.25),
		Median: Quantile(v, 0.5),
		Q3:     Quantile(v, 0.75),
		Max:    v[len(v)-1],
	}
}

// Quantile is the q-quantile (0 <= q <= 1) of sorted, interpolating
// linearly between closest ranks (R's type 7, numpy's default).
func Quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	h := q * float64(len(sorted)-1)
	lo := int(math.Floor(h))
	hi := int(math.Ceil(h))
	return sorted[lo] + (h-float64(lo))*(sorted[hi]-sorted[lo])
}

// Median is the median of xs (which it does not modify).
func Median(xs []float64) float64 { return Summarize(xs).Median }

// Ratios returns a[i]/b[i] for each pair, for ratios taken within one
// repetition (both sides measured back to back) rather than between
// medians. Pairs with a zero or NaN side give NaN.
func Ratios(a, b []float64) []float64 {
	n := min(len(a), len(b))
	r := make([]float64, n)
	for i := range n {
		if b[i] == 0 || math.IsNaN(a[i]) || math.IsNaN(b[i]) {
			r[i] = math.NaN()
			continue
		}
		r[i] = a[i] / b[i]
	}
	return r
}

// Slope is the least-squares slope of y against x, and r2 the coefficient
// of determination of that line (1: perfectly linear).
func Slope(x, y []float64) (slope, intercept, r2 float64) {
	n := float64(min(len(x), len(y)))
	if n < 2 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	var sx, sy, sxx, sxy, syy float64
	for i := range int(n) {
		sx += x[i]
		sy += y[i]
		sxx += x[i] * x[i]
		sxy += x[i] * y[i]
		syy += y[i] * y[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return math.NaN(), math.NaN(), math.NaN()
	}
	slope = (n*sxy - sx*sy) / den
	intercept = (sy - slope*sx) / n
	vy := n*syy - sy*sy
	if vy == 0 {
		return slope, intercept, 1
	}
	c := n*sxy - sx*sy
	r2 = c * c / (den * vy)
	return slope, intercept, r2
}

// Format renders s with f formatting each statistic, as
// "median (min–max)".
func (s Summary) Format(f func(float64) string) string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 {
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median), f(s.Min), f(s.Max))
}

// Num formats x with three significant digits, switching to k/M/G
// suffixes for large values ("1.23k", "45.6M").
func Num(x float64) string {
	switch {
	case math.IsNaN(x):
		return "–"
	case math.IsInf(x, 0):
		return fmt.Sprint(x)
	}
	ax := math.Abs(x)
	for _, u := range []struct {
		div float64
		sfx string
	}{{1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if ax >= u.div*0.9995 {
			return sig3(x/u.div) + u.sfx
		}
	}
	return sig3(x)
}

// sig3 formats x with three significant digits and no exponent.
func sig3(x float64) string {
	ax := math.Abs(x)
	switch {
	case ax == 0:
		return "0"
	case ax >= 99.95:
		return fmt.Sprintf("%.0f", x)
	case ax >= 9.995:
		return fmt.Sprintf("%.1f", x)
	case ax >= 0.9995:
		return fmt.Sprintf("%.2f", x)
	case ax >= 0.09995:
		return fmt.Sprintf("%.3f", x)
	default:
		return fmt.Sprintf("%.2g", x)
	}
}

// Ratio formats a ratio as "2.35x".
func Ratio(x float64) string {
	if math.IsNaN(x) {
		return "–"
	}
	return sig3(x) + "x"
}

// Duration formats seconds with a unit: ns, µs, ms or s.
func Duration(sec float64) string {
	switch a := math.Abs(sec); {
	case math.IsNaN(sec):
		return "–"
	case a >= 0.9995:
		return sig3(sec) + " s"
	case a >= 0.9995e-3:
		return sig3(sec*1e3) + " ms"
	case a >= 0.9995e-6:
		return sig3(sec*1e6) + " µs"
	default:
		return sig3(sec*1e9) + " ns"
	}
}

// Bytes formats a byte count in binary units (KiB, MiB, GiB).
func Bytes(b float64) string {
	switch a := math.Abs(b); {
	case math.IsNaN(b):
		return "–"
	case a >= 1<<30:
		return sig3(b/(1<<30)) + " GiB"
	case a >= 1<<20:
		return sig3(b/(1<<20)) + " MiB"
	case a >= 1<<10:
		return sig3(b/(1<<10)) + " KiB"
	default:
		return fmt.Sprintf("%.0f B", b)
	}
}
