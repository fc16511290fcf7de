package imgtool

import (
	encbin "encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// snapshotEntry finds entry i of the snapshot table of the image bytes b:
// its offset and length.
func snapshotEntry(b []byte, i int) (int64, int64) {
	be := encbin.BigEndian
	off := int64(be.Uint64(b[64:]))
	for k := 0; ; k++ {
		off = (off + 7) &^ 7
		n := 40 + int64(be.Uint32(b[off+36:])) + int64(be.Uint16(b[off+12:])) + int64(be.Uint16(b[off+14:]))
		if k == i {
			return off, n
		}
		off += n
	}
}

var allModes = []string{"", "leaks", "all"}

// TestImgCheckSnapshotTableInterop: check and check -r leaks|all of
// broken snapshot tables (QEMU's qcow2_check_read_snapshot_table cases),
// side by side with qemu-img: the same output and exit status, and
// repaired images qemu-img accepts, listing the same snapshots.
func TestImgCheckSnapshotTableInterop(t *testing.T) {
	needQemuCheck(t)
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	runTool(t, dir, "qemu-img", "create", "-f", "qcow2", base, "8M")
	runTool(t, dir, "qemu-io", "-c", "write -P 1 0 128k", base)
	for _, s := range []string{"sn0", "sn1", "sn2"} {
		runTool(t, dir, "qemu-img", "snapshot", "-c", s, base)
	}
	data, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	be := encbin.BigEndian
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		modes  []string
	}{
		{"incomplete entries", func(b []byte) []byte { return shrinkExtra(shrinkExtra(b, 0, 0), 2, 8) }, allModes},
		{"too much extra data", func(b []byte) []byte {
			off, _ := snapshotEntry(b, 2)
			be.PutUint32(b[off+36:], 1025)
			return b
		}, allModes},
		// (-r all then reads 65536 entries of zeroes, on which QEMU's
		// table rewrite fails for an overlap and minivmm's for the
		// refcount it would free twice: both exit 1, in other words.)
		{"too many snapshots", func(b []byte) []byte { be.PutUint32(b[60:], 65536+3); return b }, []string{"", "leaks"}},
		{"table offset unaligned", func(b []byte) []byte { be.PutUint64(b[64:], be.Uint64(b[64:])+8); return b }, allModes},
	}
	for _, tc := range cases {
		for _, mode := range tc.modes {
			t.Run(tc.name+"-"+mode, func(t *testing.T) {
				b := tc.mutate(append([]byte(nil), data...))
				q, m := "q.qcow2", "m.qcow2"
				for _, n := range []string{q, m} {
					if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				args := []string{}
				if mode != "" {
					args = append(args, "-r", mode)
				}
				qout, qerr, qcode := runRepair(t, dir, false, append(args, q)...)
				mout, merr, mcode := runRepair(t, dir, true, append(args, m)...)
				qout, qerr = strings.ReplaceAll(qout, q, m), strings.ReplaceAll(qerr, q, m)
				// Where the repaired table lands may differ (minivmm
				// allocates at the end): not the image end offset.
				cut := func(s string) string {
					var keep []string
					for _, l := range strings.Split(s, "\n") {
						if !strings.HasPrefix(l, "Image end offset:") {
							keep = append(keep, l)
						}
					}
					return strings.Join(keep, "\n")
				}
				if cut(mout) != cut(qout) || merr != qerr || mcode != qcode {
					t.Errorf("exit %d, want %d\nstdout:\n%s\nwant:\n%s\nstderr:\n%s\nwant:\n%s", mcode, qcode, mout, qout, merr, qerr)
				}
				qc, _, _ := qemuCheck(t, dir, q)
				_, mc, me := qemuCheck(t, dir, m)
				if qc != nil && mc != 0 && mode == "all" {
					t.Errorf("qemu-img check after minivmm's repair: exit %d\n%s", mc, me)
				}
				ql, _ := exec.Command("qemu-img", "snapshot", "-l", filepath.Join(dir, q)).CombinedOutput()
				ml, _ := exec.Command("qemu-img", "snapshot", "-l", filepath.Join(dir, m)).CombinedOutput()
				if strings.ReplaceAll(string(ql), q, m) != string(ml) {
					t.Errorf("snapshots after the repair:\n%s\nqemu-img's:\n%s", ml, ql)
				}
			})
		}
	}
}

// shrinkExtra gives snapshot table entry i of the image bytes b only n
// bytes of extra data, as an older writer would have (the entries after
// it move up).
func shrinkExtra(b []byte, i int, n uint32) []byte {
	be := encbin.BigEndian
	off, l := snapshotEntry(b, i)
	_, lastLen := snapshotEntry(b, int(be.Uint32(b[60:]))-1)
	lastOff, _ := snapshotEntry(b, int(be.Uint32(b[60:]))-1)
	end := lastOff + lastLen
	e := append([]byte(nil), b[off:off+l]...)
	old := be.Uint32(e[36:])
	ne := append(append([]byte(nil), e[:40+n]...), e[40+old:]...)
	be.PutUint32(ne[36:], n)
	rest := append([]byte(nil), b[off+l:end]...)
	out := append([]byte(nil), b...)
	clear(out[off:end])
	copy(out[off:], ne)
	// Re-align the following entries.
	next := (off + int64(len(ne)) + 7) &^ 7
	for len(rest) > 0 {
		rest = rest[(8-(l%8))%8:] // the padding after the old entry
		l2 := 40 + int64(be.Uint32(rest[36:])) + int64(be.Uint16(rest[12:])) + int64(be.Uint16(rest[14:]))
		copy(out[next:], rest[:l2])
		next = (next + l2 + 7) &^ 7
		l, rest = l2, rest[l2:]
	}
	return out
}

// TestImgAmendCompatSnapshotsInterop: amend -o compat=1.1 of a version 2
// image whose snapshot table entries lack the extra data version 3
// requires: QEMU rewrites the table (24 bytes of extra data each) before
// the header, and so does minivmm.
func TestImgAmendCompatSnapshotsInterop(t *testing.T) {
	needQemuCheck(t)
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	runTool(t, dir, "qemu-img", "create", "-f", "qcow2", "-o", "compat=0.10", base, "8M")
	runTool(t, dir, "qemu-io", "-c", "write -P 1 0 128k", base)
	for _, s := range []string{"sn0", "sn1", "sn2"} {
		runTool(t, dir, "qemu-img", "snapshot", "-c", s, base)
	}
	data, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	data = shrinkExtra(shrinkExtra(data, 0, 0), 2, 8)
	for _, n := range []string{"q.qcow2", "m.qcow2"} {
		if err := os.WriteFile(filepath.Join(dir, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	runTool(t, dir, "qemu-img", "amend", "-o", "compat=1.1", "q.qcow2")
	if out, errs, code := imgIn(t, dir, "amend", "-o", "compat=1.1", "m.qcow2"); code != 0 {
		t.Fatalf("amend: exit %d\n%s%s", code, out, errs)
	}
	q, _ := os.ReadFile(filepath.Join(dir, "q.qcow2"))
	m, _ := os.ReadFile(filepath.Join(dir, "m.qcow2"))
	for i := 0; i < 3; i++ {
		qo, ql := snapshotEntry(q, i)
		mo, ml := snapshotEntry(m, i)
		if string(q[qo:qo+ql]) != string(m[mo:mo+ml]) {
			t.Errorf("entry %d: % x\nqemu-img's: % x", i, m[mo:mo+ml], q[qo:qo+ql])
		}
	}
	if _, code, e := qemuCheck(t, dir, "m.qcow2"); code != 0 {
		t.Errorf("qemu-img check: exit %d\n%s", code, e)
	}
	// Where the new table lands differs (minivmm allocates at the end).
	if encbin.BigEndian.Uint32(m[4:]) != 3 || encbin.BigEndian.Uint32(m[60:]) != 3 {
		t.Errorf("version %d, %d snapshots", encbin.BigEndian.Uint32(m[4:]), encbin.BigEndian.Uint32(m[60:]))
	}
}

// TestImgSnapshotL1InvalidInterop: a snapshot whose L1 table offset or
// size is invalid (iotest 080's cases): convert -l, snapshot -d and the
// last line of snapshot -a fail in qemu-img's words, writes to the
// image go on, and check reports the same.
func TestImgSnapshotL1InvalidInterop(t *testing.T) {
	needQemuCheck(t)
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	runTool(t, dir, "qemu-img", "create", "-f", "qcow2", base, "64M")
	runTool(t, dir, "qemu-io", "-c", "write 0 512", base)
	runTool(t, dir, "qemu-img", "snapshot", "-c", "test", base)
	data, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	tbl := encbin.BigEndian.Uint64(data[64:])
	for _, tc := range []struct {
		name string
		off  int64
		val  []byte
	}{
		{"offset", int64(tbl), be64(0x400200)},
		{"size", int64(tbl) + 8, []byte{0x10, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var outs [2]string
			for i, ours := range []bool{false, true} {
				p := filepath.Join(dir, tc.name+".qcow2")
				if err := os.WriteFile(p, data, 0o644); err != nil {
					t.Fatal(err)
				}
				patch(t, p, tc.off, tc.val)
				var b strings.Builder
				for _, args := range [][]string{
					{"convert", "-l", "test", p, p + ".snap"},
					{"snapshot", "-d", "test", p},
					{"check", p},
				} {
					var out, errs string
					var code int
					if ours {
						out, errs, code = imgIn(t, dir, args...)
					} else {
						cmd := exec.Command("qemu-img", args...)
						var ob, eb strings.Builder
						cmd.Stdout, cmd.Stderr = &ob, &eb
						err := cmd.Run()
						if ee, ok := err.(*exec.ExitError); ok {
							code = ee.ExitCode()
						}
						out, errs = ob.String(), eb.String()
					}
					b.WriteString(strings.Join(args[:1], " ") + ": " + out + errs + " exit " + string(rune('0'+code)) + "\n")
				}
				outs[i] = b.String()
			}
			if outs[0] != outs[1] {
				t.Errorf("minivmm:\n%s\nqemu-img:\n%s", outs[1], outs[0])
			}
		})
	}
}
