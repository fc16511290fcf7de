package imgtool

import (
	"fmt"
	"strings"

	"minivmm/block"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
	"minivmm/qemuopen"
)

// session is images opened in one block graph over one registry, so
// that -add-fd sets are installed once for all of them.
type session struct {
	e   *env
	reg *qemuopen.Registry
	g   *block.Graph
}

// newSession installs the -add-fd sets, or prints why not.
func (e *env) newSession(addFds []cmdline.Occurrence) (*session, bool) {
	s := &session{e: e, reg: qemuopen.New(qemuopen.Config{})}
	if err := cmdline.AddFds(s.reg, addFds); err != nil {
		fmt.Fprintf(e.stderr, "%s: %v\n", e.prog, err)
		s.reg.CloseAll()
		return nil, false
	}
	s.g = block.NewGraph(s.reg)
	s.g.SetObjects(e.objects)
	s.g.OnCorruption(qtool.CorruptionPrinter(e.stderr))
	s.g.OnWarning(qtool.WarningPrinter(e.stderr))
	if e.Setup != nil {
		if err := e.Setup(s.g); err != nil {
			fmt.Fprintf(e.stderr, "%s: %v\n", e.prog, err)
			s.g.Close()
			s.reg.CloseAll()
			return nil, false
		}
	}
	return s, true
}

// close closes the images; what closing them failed with (a format's
// write-back at close) is kept for Run to report and fail with.
func (s *session) close() {
	if s.g == nil {
		return
	}
	if err := s.g.Close(); err != nil {
		s.e.closeErrs = append(s.e.closeErrs, err)
	}
	s.g = nil
	s.reg.CloseAll()
}

// open opens an image as qemu-img's img_open does: in the format given,
// or probed (any format, as qemu-img takes it, even for writing; a
// writable image probed as raw gets QEMU's warning), attached for writing
// unless read-only.
func (s *session) open(f *qtool.OpenFlags) (*block.Node, error) {
	op, err := qtool.Open(s.g, f, block.ProbeAny, s.e.stderr)
	if err != nil {
		return nil, err
	}
	return op.Node, nil
}

// probe names the format of file.
func (s *session) probe(file string) (string, error) {
	return block.ProbeFile(s.reg, file)
}

// imgImage is an image opened read-only for an img subcommand, in a
// session of its own.
type imgImage struct {
	s    *session
	node *block.Node
}

func (im *imgImage) close() { im.s.close() }

// openImage opens filename read-only as qemu-img's img_open does: in the
// format given (or probed), as an option string with --image-opts, with
// the -add-fd fd sets installed. Errors are printed, in qemu-img's words.
func (e *env) openImage(filename, format string, imageOpts, forceShare bool, addFds []cmdline.Occurrence) (*imgImage, bool) {
	s, ok := e.newSession(addFds)
	if !ok {
		return nil, false
	}
	n, ok := s.openReadOnly(filename, format, imageOpts, forceShare)
	if !ok {
		s.close()
		return nil, false
	}
	return &imgImage{s: s, node: n}, true
}

// openReadOnly opens filename read-only in s as openImage does, for a
// subcommand that reads several images over one set of -add-fd fds.
func (s *session) openReadOnly(filename, format string, imageOpts, forceShare bool) (*block.Node, bool) {
	n, err := s.open(&qtool.OpenFlags{File: filename, Format: format, ImageOpts: imageOpts, ReadOnly: true, ForceShare: forceShare})
	if err != nil {
		fmt.Fprintf(s.e.stderr, "%s: Could not open '%s': %s\n", s.e.prog, filename, qtool.Message(err))
		return nil, false
	}
	return n, true
}

// openNoBacking is openReadOnly without the backing chain and without a
// qcow2 image's data file (infoFlags), as qemu-img info opens an image
// (BDRV_O_NO_BACKING, no I/O): what the header says of its backing file
// is shown even when that file is missing or loops back.
// It also returns the image's name as QEMU's would read: the option that
// leaves the backing file closed is no part of it.
func (s *session) openNoBacking(filename, format string, imageOpts, forceShare bool) (*block.Node, string, bool) {
	f := &qtool.OpenFlags{File: filename, Format: format, ImageOpts: imageOpts, ReadOnly: true, ForceShare: forceShare}
	if !imageOpts {
		if format == "" {
			// Probed here, as the open would: only a format with a
			// backing file takes the option. A probe that fails is left
			// for the open to report in its words.
			format, _ = s.probe(filename)
			if opts, isJSON, err := qtool.ParseFilename(filename); isJSON && err == nil {
				format, _ = opts.String("driver", "") // json: names its format
			}
			if format == "qcow2" {
				f.Format = format
			}
		}
		if format == "qcow2" {
			f.Extra = block.Options{"backing": nil}
		}
	}
	n, err := s.open(s.infoFlags(f))
	if err != nil {
		fmt.Fprintf(s.e.stderr, "%s: Could not open '%s': %s\n", s.e.prog, filename, qtool.Message(err))
		return nil, "", false
	}
	name := n.Filename()
	if file := n.Child("file"); f.Extra != nil && file != nil && !strings.HasPrefix(file.Filename(), "json:") {
		name = file.Filename()
	}
	return n, name, true
}
