package stats

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		in   []float64
		want Summary
	}{
		{[]float64{5}, Summary{N: 1, Min: 5, Q1: 5, Median: 5, Q3: 5, Max: 5}},
		{[]float64{3, 1, 2}, Summary{N: 3, Min: 1, Q1: 1.5, Median: 2, Q3: 2.5, Max: 3}},
		{[]float64{4, 1, 3, 2}, Summary{N: 4, Min: 1, Q1: 1.75, Median: 2.5, Q3: 3.25, Max: 4}},
		{[]float64{nan, 7, 1}, Summary{N: 2, Min: 1, Q1: 2.5, Median: 4, Q3: 5.5, Max: 7}},
	} {
		if got := Summarize(tc.in); got != tc.want {
			t.Errorf("Summarize(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if s := Summarize(nil); s.N != 0 || !math.IsNaN(s.Median) {
		t.Errorf("Summarize(nil) = %+v", s)
	}
}

func TestRatios(t *testing.T) {
	got := Ratios([]float64{10, 6, 1, 5}, []float64{2, 3, 0})
	want := []float64{5, 2, math.NaN()}
	if len(got) != len(want) {
		t.Fatalf("Ratios = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] && !(math.IsNaN(got[i]) && math.IsNaN(want[i])) {
			t.Errorf("Ratios[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestSlope(t *testing.T) {
	for _, tc := range []struct {
		x, y                 []float64
		slope, intercept, r2 float64
	}{
		{[]float64{1, 10, 100, 1000}, []float64{3, 21, 201, 2001}, 2, 1, 1},
		{[]float64{0, 1, 2}, []float64{5, 5, 5}, 0, 5, 1},
	} {
		s, i, r2 := Slope(tc.x, tc.y)
		if math.Abs(s-tc.slope) > 1e-9 || math.Abs(i-tc.intercept) > 1e-9 || math.Abs(r2-tc.r2) > 1e-9 {
			t.Errorf("Slope(%v, %v) = %v, %v, %v; want %v, %v, %v", tc.x, tc.y, s, i, r2, tc.slope, tc.intercept, tc.r2)
		}
	}
	if s, _, _ := Slope([]float64{1}, []float64{1}); !math.IsNaN(s) {
		t.Errorf("Slope of one point = %v, want NaN", s)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{Num(0), "0"},
		{Num(1234), "1.23k"},
		{Num(999.96), "1.00k"},
		{Num(45_600_000), "45.6M"},
		{Num(12.345), "12.3"},
		{Num(0.5), "0.500"},
		{Num(math.NaN()), "–"},
		{Ratio(2.345), "2.35x"},
		{Ratio(0.0123), "0.012x"},
		{Duration(1.5), "1.50 s"},
		{Duration(0.0021), "2.10 ms"},
		{Duration(3.2e-6), "3.20 µs"},
		{Duration(850e-9), "850 ns"},
		{Bytes(512), "512 B"},
		{Bytes(3 << 20), "3.00 MiB"},
		{Summary{N: 3, Min: 1, Median: 2, Max: 3}.Format(Num), "2.00 (1.00–3.00)"},
		{Summary{N: 1, Min: 2, Median: 2, Max: 2}.Format(Num), "2.00"},
		{Summary{}.Format(Num), "–"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
