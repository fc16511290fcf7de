package qcow2

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCreateMatchesQemuImg: Create writes the file qemu-img create writes,
// byte for byte, across cluster sizes, versions and backing files whose
// names fill the first cluster (QEMU leaves the feature name table out
// with clusters of 4 KiB or less); where the name does not fit, both
// refuse it in the same words.
func TestCreateMatchesQemuImg(t *testing.T) {
	createNeedQemuImg(t)
	fixture(t)
	dir := t.TempDir()
	long := func(n int) string { return strings.Repeat("b", n) }
	type tc struct {
		cs            int64
		compat        string
		backing, bfmt string
		lazy, extL2   bool
	}
	var cases []tc
	for _, cs := range []int64{512, 1024, 4096, 8192, 65536, 2 << 20} {
		for _, compat := range []string{"1.1", "0.10"} {
			cases = append(cases,
				tc{cs: cs, compat: compat},
				tc{cs: cs, compat: compat, backing: "base.qcow2", bfmt: "qcow2"},
				tc{cs: cs, compat: compat, backing: long(376), bfmt: "raw"},
				tc{cs: cs, compat: compat, backing: long(377), bfmt: "raw"},
				tc{cs: cs, compat: compat, backing: long(1023), bfmt: "qcow2"},
			)
		}
	}
	cases = append(cases, tc{cs: 16384, compat: "1.1", lazy: true, extL2: true, backing: "b", bfmt: "raw"})
	for _, c := range cases {
		opts := "cluster_size=" + itoa(c.cs) + ",compat=" + c.compat
		if c.lazy {
			opts += ",lazy_refcounts=on"
		}
		if c.extL2 {
			opts += ",extended_l2=on"
		}
		name := opts + ",backing=" + itoa(int64(len(c.backing)))
		q := filepath.Join(dir, "q.qcow2")
		os.Remove(q)
		args := []string{"create", "-q", "-f", "qcow2", "-u", "-o", opts}
		if c.backing != "" {
			args = append(args, "-b", c.backing, "-F", c.bfmt)
		}
		out, qerr := exec.Command("qemu-img", append(args, q, "3M")...).CombinedOutput()
		o := CreateOptions{Size: 3 << 20, ClusterSize: c.cs, Version: map[string]int{"1.1": 3, "0.10": 2}[c.compat],
			LazyRefcounts: c.lazy, ExtendedL2: c.extL2, BackingFile: c.backing, BackingFormat: c.bfmt}
		if qerr != nil {
			err := ValidateCreate(o)
			if err == nil || !strings.Contains(string(out), err.Error()) {
				t.Errorf("%s: qemu-img refuses it (%.200s), minivmm says %v", name, bytes.TrimSpace(out), err)
			}
			continue
		}
		p, err := createFile(t, o)
		if err != nil {
			t.Errorf("%s: qemu-img creates it, minivmm: %v", name, err)
			continue
		}
		want, _ := os.ReadFile(q)
		got, _ := os.ReadFile(p)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: file differs from qemu-img's at byte %d (lengths %d, %d)", name, firstDiff(got, want), len(got), len(want))
		}
	}
}
