package imgtool

// img info and a qcow2 image's external data file: as qemu-img 7.2's
// info (which opens images without I/O, and so, since the fix for
// CVE-2024-4467, never opens the data file), minivmm's info does not
// open it: a null node stands in for it, so that info on an untrusted
// image opens no file the image names as its data file, and works when
// that file is missing.

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/internal/qtool"
)

// infoFlags returns the open flags of img info for filename: f, with a
// stand-in data file for a qcow2 image that has one.
func (s *session) infoFlags(f *qtool.OpenFlags) *qtool.OpenFlags {
	if f.Format != "" && f.Format != "qcow2" {
		return f
	}
	path := f.File
	if f.ImageOpts {
		opts, err := f.Options(s.g)
		if err != nil {
			return f // the open reports it
		}
		if d, _ := opts.String("driver", ""); d != "qcow2" {
			return f
		}
		if _, given := opts["data-file"]; given {
			return f // minivmm opens the one given (QEMU's info ignores it)
		}
		file, _ := opts.Object("file")
		if file == nil {
			return f
		}
		path, _ = file.String("filename", "")
	}
	if path == "" || strings.HasPrefix(path, "json:") || block.ProtocolFor(path) != "file" {
		return f
	}
	fd, err := s.reg.Open(path, unix.O_RDONLY)
	if err != nil {
		return f
	}
	first := make([]byte, 104)
	n, _ := unix.Pread(fd, first, 0)
	s.reg.Close(fd)
	size, external := qcow2.HeaderDataFile(first[:max(n, 0)])
	if !external {
		return f
	}
	g := *f
	if f.ImageOpts {
		g.File += fmt.Sprintf(",data-file.driver=null-co,data-file.size=%d,data-file.read-zeroes=on", size)
		return &g
	}
	g.Extra = block.Options{}
	for k, v := range f.Extra {
		g.Extra[k] = v
	}
	g.Extra["driver"] = "qcow2"
	g.Extra["data-file"] = block.Options{"driver": "null-co", "size": size, "read-zeroes": true}
	return &g
}
