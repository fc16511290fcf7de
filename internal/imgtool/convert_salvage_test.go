package imgtool

import "testing"

// TestImgConvertSalvageInterop: convert --salvage over a qcow2 image one
// of whose clusters cannot be read (its L2 entry unaligned), by both
// tools: the same warnings (QEMU's corruption line once, block status
// narrowed to the sector, told in both passes; each sector's read), the
// same output image.
func TestImgConvertSalvageInterop(t *testing.T) {
	setup := []diffStep{
		img("create", "-f", "qcow2", "sv.qcow2", "2M"),
		qio("-c", "write -P 1 0 64k", "-c", "write -P 2 1M 64k", "sv.qcow2"),
		// The first L2 entry gets bit 9: an unaligned data cluster.
		{tool: "python3", args: []string{"-c", `import struct
f=open('sv.qcow2','r+b')
f.seek(40); l1=struct.unpack('>Q',f.read(8))[0]
f.seek(l1); l2=struct.unpack('>Q',f.read(8))[0]&0x00fffffffffffe00
f.seek(l2); e=struct.unpack('>Q',f.read(8))[0]; f.seek(l2); f.write(struct.pack('>Q', e|0x200))`}},
	}
	runDiffCases(t, []diffCase{
		{name: "salvage", setup: setup, images: []string{"o.raw", "o.qcow2"}, steps: []diffStep{
			img("convert", "--salvage", "-O", "raw", "sv.qcow2", "o.raw"),
			img("convert", "--salvage", "-q", "-O", "qcow2", "sv.qcow2", "o.qcow2"),
		}},
		{name: "no-salvage", setup: setup, steps: []diffStep{
			img("convert", "-O", "raw", "sv.qcow2", "o.raw"),
		}},
	})
}
