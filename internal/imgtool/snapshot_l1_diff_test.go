package imgtool

import "testing"

// TestImgBrokenSnapshotL1Interop: iotest 080's snapshots whose L1 table
// offset or size is invalid, by both tools. QEMU prints the validation's
// message where it finds it (error_report_err) before the command's own:
// "Failed to turn zero into data clusters" with the errno (amend
// compat=0.10), "Could not apply snapshot" (snapshot -a).
func TestImgBrokenSnapshotL1Interop(t *testing.T) {
	// One 512-byte write and a snapshot on a 64M image put the snapshot
	// table at 0x70000 (080's offsets); the raw writes poke its entry.
	mk := func(poke ...string) []diffStep {
		return []diffStep{
			img("create", "-f", "qcow2", "t.qcow2", "64M"),
			qio("-c", "write 0 512", "t.qcow2"),
			img("snapshot", "-c", "test", "t.qcow2"),
			qio(append(append([]string{"-f", "raw"}, poke...), "t.qcow2")...),
		}
	}
	steps := []diffStep{
		img("amend", "-o", "compat=0.10", "t.qcow2"),
		img("snapshot", "-a", "test", "t.qcow2"),
		img("snapshot", "-d", "test", "t.qcow2"),
		// What is left (the snapshot cannot be applied, so the images
		// are compared by check's report).
		img("check", "t.qcow2"),
	}
	runDiffCases(t, []diffCase{
		// l1_table_offset 0x400200: not cluster aligned (EINVAL).
		{name: "l1-offset", steps: steps,
			setup: mk("-c", "write -P 0 0x70000 8", "-c", "write -P 0x40 0x70005 1", "-c", "write -P 2 0x70006 1")},
		// l1_size 0x10000000: too large (EFBIG).
		{name: "l1-size", steps: steps,
			setup: mk("-c", "write -P 0x10 0x70008 1", "-c", "write -P 0 0x70009 3")},
	})
}

// TestImgAmendCorruptInterop: iotest 060's zero cluster expansion over
// corrupt metadata, by both tools: the corruption event marks the image
// corrupt, then "Failed to turn zero into data clusters" with EIO.
func TestImgAmendCorruptInterop(t *testing.T) {
	mk := func(poke ...string) []diffStep {
		return []diffStep{
			img("create", "-f", "qcow2", "t.qcow2", "64M"),
			qio("-c", "write 0 64k", "t.qcow2"),
			qio(append(append([]string{"-f", "raw"}, poke...), "t.qcow2")...),
		}
	}
	steps := []diffStep{img("amend", "-o", "compat=0.10", "t.qcow2"), img("check", "t.qcow2")}
	runDiffCases(t, []diffCase{
		// The L1 entry 0x8000000000042a00: an unaligned L2 table.
		{name: "l1-entry", steps: steps, setup: mk("-c", "write -P 0x80 0x30000 1", "-c", "write -P 0 0x30001 4",
			"-c", "write -P 4 0x30005 1", "-c", "write -P 0x2a 0x30006 1", "-c", "write -P 0 0x30007 1")},
		// The L2 entry 0x8000000000052a01: an unaligned zero cluster.
		{name: "l2-entry", steps: steps, setup: mk("-c", "write -P 0x80 0x40000 1", "-c", "write -P 0 0x40001 4",
			"-c", "write -P 5 0x40005 1", "-c", "write -P 0x2a 0x40006 1", "-c", "write -P 1 0x40007 1")},
	})
}
