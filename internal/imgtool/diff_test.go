package imgtool

// A differential harness: the same command lines run by qemu-img 7.2 and
// by minivmm img on copies of the same images, their output, exit
// status and resulting images compared (qemu-img compare and check, the
// normalized info, and, for qcow2, every internal snapshot's content).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// diffStep is one command line: qemu-img's (run by both tools and
// compared) unless tool names a real tool both copies get run through
// unchanged (qemu-io, to write between steps; it must succeed).
type diffStep struct {
	tool string
	args []string
}

func img(args ...string) diffStep { return diffStep{args: args} }
func qio(args ...string) diffStep { return diffStep{tool: "qemu-io", args: args} }

// diffCase builds images in a directory with the real tools (setup),
// then runs steps on two copies of it; images are the files compared.
type diffCase struct {
	name   string
	setup  []diffStep
	steps  []diffStep
	images []string
	// better: qemu-img leaves an image check finds fault with (a
	// failure half done); minivmm's must be clean instead.
	better bool
}

var volatileText = []*regexp.Regexp{
	regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`),    // snapshot dates
	regexp.MustCompile(`Run completed in \d+\.\d+ seconds`), // bench timings
}

func normalizeText(s string) string {
	for _, re := range volatileText {
		s = re.ReplaceAllString(s, "DATE")
	}
	return s
}

func runReal(t *testing.T, dir, tool string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(tool, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if out, err := exec.Command("cp", "--sparse=always", filepath.Join(from, e.Name()), filepath.Join(to, e.Name())).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v %s", err, out)
		}
	}
}

// normalizedInfo is qemu-img info --output=json without what differs
// between two equal images: sizes on disk, dates, paths.
func normalizedInfo(t *testing.T, dir, image string) string {
	t.Helper()
	out, errs, code := runReal(t, dir, "qemu-img", "info", "-U", "--output=json", image)
	if code != 0 {
		t.Fatalf("qemu-img info %s: %s", image, errs)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "actual-size")
	for _, sn := range asList(m["snapshots"]) {
		delete(sn.(map[string]any), "date-sec")
		delete(sn.(map[string]any), "date-nsec")
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func asList(v any) []any { l, _ := v.([]any); return l }

// normalizedMap is qemu-img map --output=json without host offsets:
// which ranges are data, zero or unallocated. Whether a data range reads
// as zero is the host file's business (a hole in a cluster the image
// allocated), not the image's, and is dropped too; equal neighbours
// merge.
func normalizedMap(t *testing.T, dir, image string) string {
	t.Helper()
	out, errs, code := runReal(t, dir, "qemu-img", "map", "-U", "--output=json", image)
	if code != 0 {
		t.Fatalf("qemu-img map %s: %s", image, errs)
	}
	var l []map[string]any
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	var prev map[string]any
	flush := func() {
		if prev != nil {
			j, _ := json.Marshal(prev)
			b.Write(j)
			b.WriteByte('\n')
		}
	}
	for _, e := range l {
		delete(e, "offset")
		if e["data"] == true {
			delete(e, "zero")
		}
		if prev != nil && prev["depth"] == e["depth"] && prev["data"] == e["data"] && prev["zero"] == e["zero"] && prev["present"] == e["present"] {
			prev["length"] = prev["length"].(float64) + e["length"].(float64)
			continue
		}
		flush()
		prev = e
	}
	flush()
	return b.String()
}

// normalizedCheck is qemu-img check --output=json of what must agree:
// corruptions, errors and leaks, allocated clusters.
func normalizedCheck(t *testing.T, dir, image string) string {
	t.Helper()
	out, _, code := runReal(t, dir, "qemu-img", "check", "-U", "--output=json", image)
	var m map[string]any
	json.Unmarshal([]byte(out), &m)
	keep := map[string]any{"exit": code}
	for _, k := range []string{"corruptions", "leaks", "check-errors", "allocated-clusters", "total-clusters", "compressed-clusters"} {
		keep[k] = m[k]
	}
	b, _ := json.Marshal(keep)
	return string(b)
}

// snapshotIDs lists the internal snapshots as qemu-img does.
func snapshotIDs(t *testing.T, dir, image string) []string {
	out, _, _ := runReal(t, dir, "qemu-img", "info", "-U", "--output=json", image)
	var m map[string]any
	json.Unmarshal([]byte(out), &m)
	var ids []string
	for _, sn := range asList(m["snapshots"]) {
		ids = append(ids, sn.(map[string]any)["id"].(string))
	}
	return ids
}

// sameImages compares qemu-img's result (dir q) with ours (dir m).
func sameImages(t *testing.T, q, m, image string, better bool) {
	t.Helper()
	if a, b := normalizedInfo(t, q, image), normalizedInfo(t, m, image); a != b {
		t.Errorf("%s: info differs:\nqemu-img: %s\nminivmm:  %s", image, a, b)
	}
	if better {
		if _, errs, code := runReal(t, m, "qemu-img", "check", image); code != 0 {
			t.Errorf("%s: check of minivmm's: %d %s", image, code, errs)
		}
	} else if a, b := normalizedCheck(t, q, image), normalizedCheck(t, m, image); a != b {
		t.Errorf("%s: check differs:\nqemu-img: %s\nminivmm:  %s", image, a, b)
	}
	if a, b := featureBits(t, q, image), featureBits(t, m, image); a != b {
		t.Errorf("%s: header feature bits (incompatible, compatible, autoclear) differ: qemu-img %s, minivmm %s", image, a, b)
	}
	if a, b := normalizedMap(t, q, image), normalizedMap(t, m, image); a != b {
		t.Errorf("%s: map differs:\nqemu-img: %s\nminivmm:  %s", image, a, b)
	}
	if _, errs, code := runReal(t, q, "qemu-img", "compare", "-U", image, filepath.Join(m, image)); code != 0 {
		t.Errorf("%s: qemu-img compare: %d %s", image, code, errs)
	}
	ids := snapshotIDs(t, q, image)
	if got := snapshotIDs(t, m, image); !slices.Equal(ids, got) {
		t.Errorf("%s: snapshots %q, minivmm's %q", image, ids, got)
		return
	}
	for _, id := range ids {
		// Each snapshot's content, applied by qemu-img on copies.
		cq, cm := t.TempDir(), t.TempDir()
		copyDir(t, q, cq)
		copyDir(t, m, cm)
		for _, d := range []string{cq, cm} {
			if _, errs, code := runReal(t, d, "qemu-img", "snapshot", "-a", id, image); code != 0 {
				t.Fatalf("qemu-img snapshot -a %s: %s", id, errs)
			}
		}
		if _, errs, code := runReal(t, cq, "qemu-img", "compare", image, filepath.Join(cm, image)); code != 0 {
			t.Errorf("%s: snapshot %s differs: %d %s", image, id, code, errs)
		}
	}
}

// runDiffCases runs each case by both tools and compares.
func runDiffCases(t *testing.T, cases []diffCase) {
	needQemuCheck(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			for _, s := range c.setup {
				if _, errs, code := runReal(t, base, s.toolName(), s.args...); code != 0 {
					t.Fatalf("setup %s %q: %s", s.toolName(), s.args, errs)
				}
			}
			q, m := t.TempDir(), t.TempDir()
			copyDir(t, base, q)
			copyDir(t, base, m)
			for _, s := range c.steps {
				if s.tool != "" {
					for _, d := range []string{q, m} {
						if out, errs, code := runReal(t, d, s.tool, s.args...); code != 0 || strings.Contains(out, "fail") {
							t.Fatalf("%s %q in %s: %s%s", s.tool, s.args, d, out, errs)
						}
					}
					continue
				}
				qo, qe, qc := runReal(t, q, "qemu-img", s.args...)
				mo, me, mc := imgIn(t, m, s.args...)
				if normalizeText(qo) != normalizeText(mo) || normalizeText(qe) != normalizeText(me) || qc != mc {
					t.Errorf("img %q:\nqemu-img (%d): %q %q\nminivmm  (%d): %q %q", s.args, qc, qo, qe, mc, mo, me)
				}
			}
			for _, image := range c.images {
				sameImages(t, q, m, image, c.better)
			}
		})
	}
}

func (s diffStep) toolName() string {
	if s.tool == "" {
		return "qemu-img"
	}
	return s.tool
}

// featureBits is a version 3 qcow2 header's feature fields, in hex.
func featureBits(t *testing.T, dir, image string) string {
	b, err := os.ReadFile(filepath.Join(dir, image))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 96 || string(b[:4]) != "QFI\xfb" || b[7] != 3 {
		return ""
	}
	return fmt.Sprintf("%x", b[72:96])
}
