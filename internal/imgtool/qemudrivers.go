package imgtool

import (
	"slices"

	"minivmm/block"
)

// qemuDrivers are the block drivers qemu-img 7.2 (Debian's build) knows by
// name ("Supported formats" in its --help): bdrv_find_format takes any of
// them where a format is named, e.g. rebase -u -F host_device, which only
// records the name.
var qemuDrivers = []string{
	"blkdebug", "blklogwrites", "blkverify", "bochs", "cloop", "compress",
	"copy-before-write", "copy-on-read", "dmg", "file", "ftp", "ftps",
	"gluster", "host_cdrom", "host_device", "http", "https", "iscsi", "iser",
	"luks", "nbd", "nfs", "null-aio", "null-co", "nvme", "parallels",
	"preallocate", "qcow", "qcow2", "qed", "quorum", "raw", "rbd",
	"replication", "snapshot-access", "ssh", "throttle", "vdi", "vhdx",
	"vmdk", "vpc", "vvfat",
}

// knownFormatName says whether qemu-img would find a driver of this name:
// one of minivmm's, or one of QEMU's that minivmm lacks.
func knownFormatName(name string) bool {
	if _, ok := block.LookupDriver(name); ok {
		return true
	}
	return slices.Contains(qemuDrivers, name)
}
