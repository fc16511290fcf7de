package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/bench/internal/stats"
	"minivmm/bench/internal/svg"
)

// chartMeta describes each chart id the cases put points in.
func chartMeta(id string) (title, ylabel string, log bool) {
	switch {
	case id == "latency":
		return "Open and reopen latency (log scale; lower is better)", "seconds per operation", true
	case id == "chain-open":
		return "Opening a qcow2 chain, by depth (log scale)", "seconds", true
	case id == "jobs-latency-p99":
		return "4 KiB write latency (p99) through a vhost-user-blk export during block jobs (log scale; lower is better)", "seconds", true
	case id == "jobs-throughput":
		return "Block job throughput, speed 0 (higher is better)", "MiB/s", false
	case id == "mirror-copy":
		return "Mirror and active commit: copy to READY (lower is better)", "seconds", false
	case id == "mirror-switch":
		return "Mirror and active commit: block-job-complete to BLOCK_JOB_COMPLETED (log scale; lower is better)", "seconds", true
	case id == "memory":
		return "VMM resident size (VmRSS) by qcow2 nodes", "MiB", false
	case strings.HasPrefix(id, "iops-"):
		parts := strings.Split(id, "-") // iops-FORMAT-SIZE
		if len(parts) == 3 {
			return fmt.Sprintf("IOPS by queue depth: %s, %s KiB requests (higher is better)", parts[1], strings.TrimSuffix(parts[2], "k")), "requests/s", false
		}
	}
	return id, "", false
}

// buildCharts turns the sections' points into charts, in order of first
// appearance, and makes sure a section shows each chart it contributed to.
func buildCharts(rep *report.Report, e *harness.Env) map[string]*svg.Chart {
	charts := map[string]*svg.Chart{}
	var order []string
	last := map[string]*report.Section{}
	for _, s := range rep.Sections {
		for _, p := range s.Points {
			c, ok := charts[p.Chart]
			if !ok {
				title, y, log := chartMeta(p.Chart)
				c = &svg.Chart{Title: title, YLabel: y, Log: log}
				charts[p.Chart] = c
				order = append(order, p.Chart)
			}
			if !slices.Contains(c.Groups, p.Group) {
				c.Groups = append(c.Groups, p.Group)
			}
			if !slices.Contains(c.Series, p.Series) {
				c.Series = append(c.Series, p.Series)
			}
			c.Set(p.Series, p.Group, svg.Bar{Value: p.Value, Lo: p.Lo, Hi: p.Hi})
			last[p.Chart] = s
		}
	}
	for _, id := range order {
		c := charts[id]
		// minivmm's series first, so that it keeps its colour in every
		// chart.
		slices.SortStableFunc(c.Series, func(a, b string) int {
			am, bm := strings.HasPrefix(a, "minivmm"), strings.HasPrefix(b, "minivmm")
			switch {
			case am && !bm:
				return -1
			case bm && !am:
				return 1
			}
			return 0
		})
		// minivmm in blues, QEMU in reds, in every chart.
		c.Colors = map[string]string{}
		blues, reds := []string{"#1f77b4", "#6baed6", "#08519c"}, []string{"#d62728", "#fc9272"}
		for _, sr := range c.Series {
			if strings.HasPrefix(sr, "minivmm") && len(blues) > 0 {
				c.Colors[sr], blues = blues[0], blues[1:]
			} else if strings.HasPrefix(strings.ToLower(sr), "qemu") && len(reds) > 0 {
				c.Colors[sr], reds = reds[0], reds[1:]
			}
		}
		if id == "latency" || id == "chain-open" {
			c.Format = stats.Duration
		}
		var missing []string
		if e.QemuImg == "" && (strings.HasPrefix(id, "iops-") || id == "chain-open") {
			missing = append(missing, harness.NotInstalled("qemu-img"))
		}
		if e.QemuSys == "" && (id == "latency" || id == "memory") {
			missing = append(missing, harness.NotInstalled("qemu-system-x86_64"))
		}
		notes := []string{"bars: median; whiskers: min–max over the rounds"}
		c.Note = strings.Join(append(notes, missing...), "; ")
		file := id + ".svg"
		shown := false
		for _, s := range rep.Sections {
			if slices.Contains(s.Charts, file) {
				shown = true
			}
		}
		if !shown {
			last[id].Charts = append(last[id].Charts, file)
		}
	}
	return charts
}

// writeCharts writes every chart as DIR/ID.svg and returns how many.
func writeCharts(dir string, rep *report.Report, e *harness.Env) (int, error) {
	charts := buildCharts(rep, e)
	for id, c := range charts {
		if err := os.WriteFile(filepath.Join(dir, id+".svg"), []byte(c.Render()), 0o644); err != nil {
			return 0, err
		}
	}
	// A chart listed by a section that produced no points (the case
	// failed) is not linked.
	for _, s := range rep.Sections {
		s.Charts = slices.DeleteFunc(s.Charts, func(f string) bool {
			_, ok := charts[strings.TrimSuffix(f, ".svg")]
			return !ok
		})
	}
	return len(charts), nil
}
