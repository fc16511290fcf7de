package imgtool

// img create -f qcow2 -o data_file=NAME: the data file is created as
// qemu-img creates it, a raw file of the image's size with the image's
// preallocation (its data clusters go there), before the image; a name
// relative to the working directory, as QEMU takes it.

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"minivmm/block/file"
	"minivmm/internal/qtool"
	"minivmm/qemuopen"
)

// createDataFile creates (or empties) the data file name through reg, so
// that /dev/fdset/N works for it too, under the locks a create takes.
func createDataFile(reg *qemuopen.Registry, name string, size uint64, prealloc string) error {
	fd, err := reg.Create(name, unix.O_RDWR, 0o644)
	if err != nil {
		var qe *qemuopen.Error
		if errors.As(err, &qe) && qe.Msg == "" {
			return fmt.Errorf("Could not create '%s': %s", name, qtool.Strerror(err))
		}
		return err
	}
	defer reg.Close(fd)
	release, err := file.LockForCreate(reg, fd, name)
	if err != nil {
		return errors.New(qtool.Message(err))
	}
	defer release()
	if prealloc != "falloc" && prealloc != "full" {
		prealloc = "off" // metadata preallocation is the image's
	}
	if err := createRaw(fd, (size+511)&^511, prealloc); err != nil {
		return fmt.Errorf("Could not create '%s': %s", name, qtool.Strerror(err))
	}
	return nil
}
