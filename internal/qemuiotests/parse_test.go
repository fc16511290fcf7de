package qemuiotests

import "testing"

func TestParseTAP(t *testing.T) {
	out := "# QEMU -- \"/usr/bin/qemu\"\n1..4\nok qcow2 001\nnot ok qcow2 020\nok qcow2 051 # SKIP\nok raw 002\nok qcow2 qcow2-discard\n" +
		"ok qcow2 077ok qcow2 104\n# running qcow2 105not ok qcow2 106\n"
	got := parseTAP(out, "qcow2")
	want := map[string]string{"001": "pass", "020": "fail", "051": "skip", "qcow2-discard": "pass", "077": "pass", "104": "pass", "106": "fail"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %q, want %q", k, got[k], v)
		}
	}
}

func TestSplitDiffs(t *testing.T) {
	out := "--- /src/020.out\n+++ /scr/020/020.out.bad\n@@ -1 +1 @@\n-a\n+b\n" +
		"--- /src/qcow2-x.out\n+++ /scr/qcow2-x/qcow2-x.out.bad\n@@ -2 +2 @@\n--- x\n+y\n"
	got := splitDiffs(out)
	if d := got["020"]; d != "--- /src/020.out\n+++ /scr/020/020.out.bad\n@@ -1 +1 @@\n-a\n+b" {
		t.Errorf("020: %q", d)
	}
	if d := got["qcow2-x"]; d != "--- /src/qcow2-x.out\n+++ /scr/qcow2-x/qcow2-x.out.bad\n@@ -2 +2 @@\n--- x\n+y\n" {
		t.Errorf("qcow2-x: %q", d)
	}
}

func FuzzSplitDiffs(f *testing.F) {
	f.Add("--- a\n+++ b/001.out.bad\n-x\n")
	f.Fuzz(func(t *testing.T, s string) {
		splitDiffs(s)
		parseTAP(s, "qcow2")
	})
}
