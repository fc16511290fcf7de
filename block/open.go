package block

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"golang.org/x/sys/unix"

	"minivmm/qemuopen"
)

// ProbeSize is how many bytes of an image the format probe reads, wherever
// it runs (QEMU's BLOCK_PROBE_BUF_SIZE): the same bytes must name the same
// format for -drive, the tools and a backing file alike.
const ProbeSize = 512

// ProbeReadError is a probe that could not read the image's first bytes.
type ProbeReadError struct {
	Filename string
	Err      error
}

func (e *ProbeReadError) Error() string {
	return "Could not read image for determining its format: " + strerror(e.Err)
}

func (e *ProbeReadError) Unwrap() error { return e.Err }

// ProbedFormatError refuses a writable open of an image whose format was
// not given and whose first bytes look like a format other than raw: a
// writable image is taken only for what its user said it is, so that a
// guest that wrote a header into a raw disk cannot make it something else.
type ProbedFormatError struct {
	Filename string
	Format   string // what the probe found
}

func (e *ProbedFormatError) Error() string {
	return fmt.Sprintf("Image format was not specified for '%s' and probing guessed %s: name the format to open it for writing",
		e.Filename, e.Format)
}

// probeHeader names the format of header, the first bytes of filename.
func probeHeader(header []byte, filename string) string {
	return Probe(header[:min(len(header), ProbeSize)], filename)
}

// ProbeNode reads the first ProbeSize bytes of file (a protocol node) and
// names their format.
func ProbeNode(file *Node) (string, error) {
	filename := file.Filename()
	header := make([]byte, min(ProbeSize, file.Length()))
	if _, err := file.ReadAt(header, 0); err != nil {
		return "", &ProbeReadError{Filename: filename, Err: err}
	}
	return probeHeader(header, filename), nil
}

// ProbeFile opens path read-only through files (so /dev/fdset/N works),
// reads its first ProbeSize bytes and names their format. Probing only
// ever reads.
func ProbeFile(files *qemuopen.Registry, path string) (string, error) {
	fd, err := files.Open(path, unix.O_RDONLY)
	if err != nil {
		return "", err
	}
	defer files.Close(fd)
	header := make([]byte, ProbeSize)
	var n int
	for {
		n, err = unix.Pread(fd, header, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return "", &ProbeReadError{Filename: path, Err: err}
	}
	return probeHeader(header[:n], path), nil
}

// ProbePolicy says which probed formats an open accepts.
type ProbePolicy int

const (
	// ProbeAny takes whatever the probe finds: for read-only opens, and
	// for tools that, as qemu-img, rewrite an image's own metadata
	// (commit, rebase, resize) and are run on images, not for guests.
	ProbeAny ProbePolicy = iota
	// ProbeRawOnly takes only raw (a writable open for a guest or qemu-io
	// style writes); any other probed format is a *ProbedFormatError.
	ProbeRawOnly
)

// Opened is what Open did.
type Opened struct {
	Node *Node
	// Probed is set when the format was found by probing; Format is then
	// what was found.
	Probed bool
	Format string
}

// ProbedRaw is whether the image was taken for raw by probing: its first
// sector must then not be written into something that probes as another
// format.
func (o Opened) ProbedRaw() bool { return o.Probed && o.Format == "raw" }

// Open opens a node from o as Add does; when o names no driver, its
// inline "file" is opened first (with the generic options o gives, as an
// inline child inherits them), probed, and the format found opened over
// it, subject to policy. On error nothing is left open.
func (g *Graph) Open(o Options, policy ProbePolicy) (Opened, error) {
	if _, hasDriver := o["driver"]; hasDriver {
		if name, err := o.String("driver", ""); err == nil {
			if _, known := g.LookupDriver(name); !known {
				return Opened{}, fmt.Errorf("Unknown driver '%s'", name)
			}
		}
		n, err := g.addLegacy(o)
		return Opened{Node: n}, err
	}
	fileRef, present := o["file"]
	fileOpts, isObject := fileRef.(Options)
	if !present {
		return Opened{}, errors.New("Must specify either driver or file")
	}
	if !isObject {
		n, err := g.addLegacy(o) // a reference to a node that cannot exist yet
		return Opened{Node: n}, err
	}
	fileOpts = fileOpts.Clone()
	for _, k := range []string{"read-only", "discard", "force-share"} {
		if v, set := o[k]; set {
			if _, own := fileOpts[k]; !own {
				fileOpts[k] = v
			}
		}
	}
	if pc, _ := o.Object("cache"); pc != nil {
		c, _ := fileOpts.Object("cache")
		if c == nil {
			c = Options{}
		}
		c = c.Clone()
		for _, k := range slices.Sorted(maps.Keys(pc)) {
			if _, own := c[k]; !own {
				c[k] = pc[k]
			}
		}
		fileOpts["cache"] = c
	}
	file, err := g.Add(fileOpts)
	if err != nil {
		return Opened{}, err
	}
	filename, _ := fileOpts.String("filename", "")
	format, err := ProbeNode(file)
	if err == nil && format != "raw" && policy == ProbeRawOnly {
		// QEMU would open the format read-write, and an image in use
		// refuses that first: test its locks as that format's writer.
		if b, lockErr := g.Attach("", file, Perm{Write: true, Image: true}); lockErr != nil {
			err = lockErr
		} else {
			g.Detach(b)
			err = &ProbedFormatError{Filename: filename, Format: format}
		}
	}
	if err != nil {
		g.Delete(file.Name())
		return Opened{}, err
	}
	o = o.Clone()
	o["driver"] = format
	o["file"] = file.Name()
	n, err := g.addLegacy(o)
	if err != nil {
		g.Delete(file.Name())
		return Opened{}, err
	}
	return Opened{Node: n, Probed: true, Format: format}, nil
}
