package file

import (
	"fmt"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// host_device and host_cdrom are QEMU's file drivers for devices: the
// same node over a character or block device instead of a regular file.
func init() {
	for _, name := range []string{"host_device", "host_cdrom"} {
		block.Register(&block.Driver{
			Name: name,
			Options: map[string]block.OptType{
				"filename": block.OptString, "aio": block.OptString, "locking": block.OptString,
				"aio-max-batch": block.OptInt, "drop-cache": block.OptBool,
			},
			Required: []string{"filename"},
			Weak:     []string{"aio", "aio-max-batch", "drop-cache", "locking"},
			Open:     func(o *block.OpenContext) (block.Image, error) { return openAs(o, name, engineHooks{}) },
		})
	}
}

// checkType refuses what the driver does not take, in QEMU's words: file
// takes regular files and block devices, host_device and host_cdrom
// character and block devices.
func (img *image) checkType(mode uint32) error {
	switch {
	case img.driver == "file" && mode != unix.S_IFREG && mode != unix.S_IFBLK:
		return fmt.Errorf("'file' driver requires '%s' to be a regular file", img.filename)
	case img.driver != "file" && mode != unix.S_IFCHR && mode != unix.S_IFBLK:
		return fmt.Errorf("'%s' driver requires '%s' to be either a character or block device", img.driver, img.filename)
	}
	return nil
}
