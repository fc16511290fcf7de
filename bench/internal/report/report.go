// Package report holds the performance report's content (sections,
// tables, targets, chart points) and renders it as Markdown.
package report

import (
	"fmt"
	"io"
	"strings"
)

// Status is whether a target was met.
type Status int

const (
	NotMeasured Status = iota // the case could not measure it (e.g. QEMU missing)
	Met
	NotMet
)

func (s Status) String() string {
	switch s {
	case Met:
		return "met"
	case NotMet:
		return "**not met**"
	}
	return "not measured"
}

// Target is one of the goals with what this run measured.
type Target struct {
	Goal     string // "img bench raw read depth 1 ≥ 5x qemu-img bench"
	Measured string // "7.1x (6.5x–7.4x)"
	Status   Status
	Note     string
}

// Check makes a target from a measured ratio that must be at least want
// (higher is better); NaN means not measured.
func Check(goal string, ratio, want float64, measured string) Target {
	t := Target{Goal: goal, Measured: measured}
	switch {
	case ratio != ratio: // NaN
		t.Status = NotMeasured
	case ratio >= want:
		t.Status = Met
	default:
		t.Status = NotMet
	}
	return t
}

// Table is a Markdown table.
type Table struct {
	Caption string
	Columns []string
	Rows    [][]string
}

// Add appends a row.
func (t *Table) Add(cells ...string) { t.Rows = append(t.Rows, cells) }

// Point is one bar of a chart: the chart's id, the group (x position) and
// series it belongs to, the median and the spread.
type Point struct {
	Chart, Group, Series string
	Value, Lo, Hi        float64
}

// Section is one case's results.
type Section struct {
	ID       string // the -run name that reproduces it
	Title    string
	Text     string   // what was measured and how
	Commands []string // the commands that produced the figures
	Tables   []*Table
	Charts   []string // SVG file names shown in this section
	Notes    []string
	Targets  []Target
	Points   []Point
	Err      error // the case could not run
}

// Table adds and returns a new table.
func (s *Section) Table(caption string, columns ...string) *Table {
	t := &Table{Caption: caption, Columns: columns}
	s.Tables = append(s.Tables, t)
	return t
}

// Note adds a note.
func (s *Section) Note(format string, a ...any) { s.Notes = append(s.Notes, fmt.Sprintf(format, a...)) }

// Point adds a chart point.
func (s *Section) Point(chart, group, series string, value, lo, hi float64) {
	s.Points = append(s.Points, Point{chart, group, series, value, lo, hi})
}

// Report is the whole document.
type Report struct {
	Title    string
	Header   []string // bullet lines: when, where, machine load, mode
	Summary  string
	Sections []*Section
}

// Targets is every section's targets, in order.
func (r *Report) Targets() []Target {
	var ts []Target
	for _, s := range r.Sections {
		ts = append(ts, s.Targets...)
	}
	return ts
}

// WriteMarkdown renders r.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", r.Title)
	for _, h := range r.Header {
		fmt.Fprintf(&b, "- %s\n", h)
	}
	if len(r.Header) > 0 {
		b.WriteString("\n")
	}
	if r.Summary != "" {
		fmt.Fprintf(&b, "%s\n\n", r.Summary)
	}
	if ts := r.Targets(); len(ts) > 0 {
		b.WriteString("## Targets\n\n")
		t := Table{Columns: []string{"target", "measured (median, min–max)", "status", "note"}}
		for _, tg := range ts {
			t.Add(tg.Goal, tg.Measured, tg.Status.String(), tg.Note)
		}
		writeTable(&b, &t)
	}
	for _, s := range r.Sections {
		writeSection(&b, s)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeSection(b *strings.Builder, s *Section) {
	fmt.Fprintf(b, "## %s\n\n", s.Title)
	if s.Err != nil {
		fmt.Fprintf(b, "**This case could not run:** %s\n\n", cell(s.Err.Error()))
	}
	if s.Text != "" {
		fmt.Fprintf(b, "%s\n\n", s.Text)
	}
	if len(s.Commands) > 0 {
		b.WriteString("Produced by:\n\n```\n")
		for _, c := range s.Commands {
			b.WriteString(c + "\n")
		}
		b.WriteString("```\n\n")
	}
	for _, t := range s.Tables {
		writeTable(b, t)
	}
	for _, c := range s.Charts {
		fmt.Fprintf(b, "![%s](%s)\n\n", strings.TrimSuffix(c, ".svg"), c)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
	if len(s.Notes) > 0 {
		b.WriteString("\n")
	}
}

func writeTable(b *strings.Builder, t *Table) {
	if t.Caption != "" {
		fmt.Fprintf(b, "%s\n\n", t.Caption)
	}
	if len(t.Columns) == 0 {
		return
	}
	row := func(cells []string) {
		b.WriteString("|")
		for i := range t.Columns {
			c := ""
			if i < len(cells) {
				c = cells[i]
			}
			fmt.Fprintf(b, " %s |", cell(c))
		}
		b.WriteString("\n")
	}
	row(t.Columns)
	b.WriteString("|")
	for range t.Columns {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, r := range t.Rows {
		row(r)
	}
	b.WriteString("\n")
}

// cell makes s safe inside a table cell: no pipes, no line breaks.
func cell(s string) string {
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", "<br>")
}

// CheckAtMost makes a target from a measured value that must be at most
// limit (lower is better); NaN means not measured.
func CheckAtMost(goal string, value, limit float64, measured string) Target {
	t := Target{Goal: goal, Measured: measured}
	switch {
	case value != value || limit != limit:
		t.Status = NotMeasured
	case value <= limit:
		t.Status = Met
	default:
		t.Status = NotMet
	}
	return t
}
