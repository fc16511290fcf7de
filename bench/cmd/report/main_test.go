package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"minivmm/bench/internal/cases"
	"minivmm/bench/internal/harness"
	"minivmm/bench/internal/report"
	"minivmm/internal/fdtest"
)

func TestBuildCharts(t *testing.T) {
	a := &report.Section{ID: "a", Charts: []string{"iops-raw-4k.svg"}}
	a.Point("iops-raw-4k", "read d=1", "minivmm img bench", 100, 90, 110)
	a.Point("iops-raw-4k", "read d=1", "qemu-img bench", 10, 9, 11)
	a.Point("latency", "fdset open", "minivmm", 1e-6, 1e-6, 1e-6)
	b := &report.Section{ID: "b"}
	b.Point("latency", "QMP reopen", "QEMU", 1e-3, 1e-3, 2e-3)
	rep := &report.Report{Sections: []*report.Section{a, b}}
	charts := buildCharts(rep, &harness.Env{})
	if len(charts) != 2 {
		t.Fatalf("%d charts, want 2", len(charts))
	}
	lat := charts["latency"]
	if !lat.Log || strings.Join(lat.Groups, ",") != "fdset open,QMP reopen" || strings.Join(lat.Series, ",") != "minivmm,QEMU" {
		t.Errorf("latency chart = %+v", lat)
	}
	if !strings.Contains(lat.Note, "qemu-system-x86_64 not installed") {
		t.Errorf("latency note %q does not say QEMU is missing", lat.Note)
	}
	// The chart goes to the last section that contributed to it, unless
	// a section already shows it.
	if strings.Join(a.Charts, ",") != "iops-raw-4k.svg" || strings.Join(b.Charts, ",") != "latency.svg" {
		t.Errorf("charts shown: a %v, b %v", a.Charts, b.Charts)
	}
	if title, y, _ := chartMeta("iops-qcow2-64k"); title != "IOPS by queue depth: qcow2, 64 KiB requests (higher is better)" || y != "requests/s" {
		t.Errorf("chartMeta = %q, %q", title, y)
	}
}

// TestQuickReport runs the -quick report end to end (one round per
// measurement) and checks that every case ran and every chart was written.
func TestQuickReport(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole -quick report (about a minute)")
	}
	fdtest.Check(t)
	out := t.TempDir()
	if code := mainErr(out, true, "", 1); code != 0 {
		b, _ := os.ReadFile(filepath.Join(out, "report.md"))
		t.Fatalf("exit %d; report:\n%s", code, b)
	}
	b, err := os.ReadFile(filepath.Join(out, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	for _, c := range cases.All() {
		if !strings.Contains(md, "## "+c.Title+"\n") {
			t.Errorf("no section %q", c.Title)
		}
	}
	if strings.Contains(md, "could not run") {
		t.Errorf("a case could not run:\n%s", md)
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("processes left running: %v", kids)
	}
	for _, f := range []string{"latency.svg", "chain-open.svg", "memory.svg", "iops-raw-4k.svg", "iops-qcow2-64k.svg"} {
		if !strings.Contains(md, "]("+f+")") {
			t.Errorf("report does not show %s", f)
		}
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
}

// children lists the processes whose parent is this one (a VMM the report
// failed to stop would be one).
func children(t *testing.T) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	me := strconv.Itoa(os.Getpid())
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == me {
			out = append(out, e.Name()+" "+s[:strings.LastIndexByte(s, ')')+1])
		}
	}
	return out
}
