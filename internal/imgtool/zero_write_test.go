package imgtool

import "testing"

// TestZeroWriteInterop: img map shows zero clusters as qemu-img does
// (those keeping their host cluster with an offset: iotests 154, 179),
// and img rebase from no backing file onto one marks zero what the new
// one would show through (iotest 252). The zero writes themselves are
// compared in iotool's TestZeroWriteDifferential.
func TestZeroWriteInterop(t *testing.T) {
	base := []diffStep{
		img("create", "-f", "qcow2", "b.qcow2", "1M"),
		qio("-c", "write -P 0x11 0 64k", "-c", "write -P 0x11 256k 64k", "-c", "write -z 512k 64k", "b.qcow2"),
	}
	mapJSON := img("map", "--output=json", "c.qcow2")
	cases := []diffCase{{
		name:  "no-backing",
		setup: append(base, img("create", "-f", "qcow2", "c.qcow2", "1M")),
		steps: []diffStep{
			qio("-c", "write -z 0 64k", "-c", "write -z 132k 4k", "-c", "write -z 1020k 4k", "-c", "write -z -u 300k 200k", "c.qcow2"),
			mapJSON,
			img("rebase", "-u", "-b", "b.qcow2", "-F", "qcow2", "c.qcow2"),
			qio("-c", "read -P 0 0 64k", "-c", "read -P 0 128k 8k", "-c", "read -P 0 256k 64k", "-c", "read -P 0x11 0 0", "c.qcow2"),
			mapJSON,
		},
		images: []string{"c.qcow2"},
	}, {
		name: "zero-alloc",
		setup: []diffStep{
			img("create", "-f", "qcow2", "c.qcow2", "1M"),
			qio("-c", "write -P 1 0 320k", "c.qcow2"),
		},
		steps: []diffStep{
			qio("-c", "write -z 0 64k", "-c", "write -z 128k 64k", "-c", "write -z -u 64k 64k", "-c", "write -z 200k 2k", "c.qcow2"),
			mapJSON,
			img("map", "c.qcow2"),
		},
		images: []string{"c.qcow2"},
	}, {
		name:  "backing",
		setup: append(base, img("create", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "c.qcow2", "1M")),
		steps: []diffStep{
			qio("-c", "write -z 4k 4k", "-c", "write -z 68k 4k", "-c", "write -z 516k 4k", "-c", "write -z 256k 64k", "c.qcow2"),
			mapJSON,
			qio("-c", "read -P 0x11 0 4k", "-c", "read -P 0 4k 4k", "-c", "read -P 0 64k 64k", "-c", "read -P 0 256k 64k", "c.qcow2"),
		},
		images: []string{"c.qcow2"},
	}, {
		// iotest 252: rebasing from no backing file onto one writes
		// zeroes where the new one has data the overlay does not cover.
		name: "rebase-from-none",
		setup: append(base,
			img("create", "-f", "qcow2", "c.qcow2", "384k"),
			qio("-c", "write -P 0x22 0 128k", "c.qcow2")),
		steps: []diffStep{
			img("rebase", "-b", "b.qcow2", "-F", "qcow2", "c.qcow2"),
			qio("-c", "read -P 0x22 0 128k", "-c", "read -P 0 128k 256k", "c.qcow2"),
			mapJSON,
		},
		images: []string{"c.qcow2"},
	}, {
		// iotest 204: map looks through blkdebug (bdrv_skip_filters),
		// naming the image's file and showing its backing file's data.
		name: "map-through-blkdebug",
		setup: append(base,
			img("create", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "c.qcow2", "1M"),
			qio("-c", "write -P 2 64k 64k", "-c", "write -z 128k 64k", "c.qcow2")),
		steps: []diffStep{
			img("map", "--image-opts", "driver=blkdebug,image.driver=qcow2,image.file.driver=file,image.file.filename=c.qcow2,align=4k"),
			img("map", "--output=json", "--image-opts", "driver=blkdebug,image.driver=qcow2,image.file.driver=file,image.file.filename=c.qcow2"),
		},
		images: []string{"c.qcow2"},
	}, {
		// iotest 150: json: filenames in QEMU's dialect (single quotes).
		name: "json-single-quotes",
		steps: []diffStep{
			img("convert", "-O", "qcow2", "-S", "512", "json:{ 'driver': 'null-co', 'size': 1048576, 'read-zeroes': true }", "c.qcow2"),
			img("map", "c.qcow2"),
			img("convert", "-O", "qcow2", "-S", "0", "json:{ 'driver': 'null-co', 'size': 1048576, 'read-zeroes': true }", "c.qcow2"),
			img("map", "c.qcow2"),
		},
		images: []string{"c.qcow2"},
	}}
	runDiffCases(t, cases)
}
