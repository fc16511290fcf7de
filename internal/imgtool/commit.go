package imgtool

// minivmm img commit: qemu-img commit over minivmm's block layer. The
// chain is opened read-only once to find the base; then reopened with the
// base added read-write by name and every image above it read-only over
// it. What is allocated above the base (BlockStatus, as img map sees it)
// is copied into the base through the top, so each range is taken from
// the layer that provides it; the base is flushed; then, unless -d, the
// top image is emptied as qemu-img's bdrv_make_empty does: its clusters
// discarded to unallocated, so that the (now committed) base shows
// through.

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/jobs"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["commit"] = imgCommand{run: runImgCommit,
		usage: "commit [-q] [-f fmt] [-t cache] [-b base] [-d] [-p] [-add-fd fd=N,set=M] filename"}
}

// chainLink is one image of an opened chain, as reopened by name.
type chainLink struct {
	driver, file string
	fileOpts     block.Options // the file child's options, to reopen it as it was
}

// fileOptions are the options that reopen a format node's file child as
// it is: its json: description parsed, or its filename's protocol
// (a blkdebug: over a file, an nbd: export, a plain file).
func fileOptions(n *block.Node) block.Options {
	name := fileOf(n)
	if o, _, err := qtool.ParseFilename(name); err == nil {
		return o
	}
	return block.Options{"driver": block.ProtocolFor(name), "filename": name}
}

// sameImage is whether a name given on the command line names the image
// whose file is file (QEMU compares the names, then the real paths).
func sameImage(name, file string) bool {
	if name == file {
		return true
	}
	a, err1 := filepath.Abs(name)
	b, err2 := filepath.Abs(file)
	if err1 != nil || err2 != nil {
		return false
	}
	if ra, err := filepath.EvalSymlinks(a); err == nil {
		a = ra
	}
	if rb, err := filepath.EvalSymlinks(b); err == nil {
		b = rb
	}
	return a == b
}

// baseName is where -b NAME points when compared with the backing file of
// the image overlay (QEMU's bdrv_find_backing_image): a relative file name
// is relative to the overlay's directory, not to the working directory; a
// protocol name or an absolute one stays as given.
func baseName(name, overlay string) string {
	if filepath.IsAbs(name) || hasProtocol(name) || hasProtocol(overlay) || strings.HasPrefix(overlay, "/dev/fdset/") {
		return name
	}
	return filepath.Join(filepath.Dir(overlay), name)
}

// hasProtocol is QEMU's path_has_protocol: a colon before any slash.
func hasProtocol(name string) bool {
	i := strings.IndexAny(name, ":/")
	return i >= 0 && name[i] == ':'
}

// fileOf is the name of the file a format node reads.
func fileOf(n *block.Node) string {
	if f := n.Child("file"); f != nil {
		return f.Filename()
	}
	return n.Filename()
}

func runImgCommit(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	var format, base string
	quiet, drop, progress, imageOpts := false, false, false, false
	a, rc, ok := e.getopt(args, "f:t:b:dpqr:", []qtool.LongOption{qtool.Opt("image-opts", false, 'I')}, func(c rune, arg string) bool {
		switch c {
		case 'I':
			imageOpts = true
		case 'f':
			format = arg
		case 'b':
			base = arg
			drop = true // as qemu-img: -b implies -d
		case 'd':
			drop = true
		case 'p':
			progress = true
		case 'q':
			quiet = true
		case 't', 'r':
		}
		return true
	})
	if !ok {
		return rc
	}
	if quiet {
		progress = false
	}
	filename, ok := e.image(a)
	if !ok {
		return 1
	}

	// The chain as the image names it.
	im, ok := e.openImage(filename, format, imageOpts, false, a.addFds)
	if !ok {
		return 1
	}
	// As qemu-img, progress starts once the image is open and ends before
	// the result is told.
	prog := newImgProgress(stdout, progress, 1)
	prog.set(0)
	err := e.commitImage(im, filename, base, drop, a.addFds, prog)
	prog.end()
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", e.prog, err)
		return 1
	}
	if !quiet {
		fmt.Fprintln(stdout, "Image committed.")
	}
	return 0
}

// commitImage commits im (closing it) into its backing file or base,
// and empties it unless drop.
func (e *env) commitImage(im *imgImage, filename, base string, drop bool, addFds []cmdline.Occurrence, prog *imgProgress) error {
	var chain []chainLink
	baseIdx := -1
	for n, i := im.node, 0; n != nil; n, i = n.Child("backing"), i+1 {
		chain = append(chain, chainLink{driver: n.Driver(), file: fileOf(n), fileOpts: fileOptions(n)})
		if i > 0 && base != "" && baseIdx < 0 && sameImage(baseName(base, chain[i-1].file), fileOf(n)) {
			baseIdx = i
		}
	}
	im.close()
	switch {
	case len(chain) < 2:
		return errors.New("Image does not have a backing file")
	case base == "":
		baseIdx = 1
	case baseIdx < 0:
		return fmt.Errorf("Did not find '%s' in the backing chain of '%s'", base, filename)
	}
	if err := e.commitChain(chain[:baseIdx+1], addFds, prog); err != nil {
		return errors.New(qtool.Message(err))
	}
	prog.set(100)
	if !drop {
		if err := e.emptyImage(chain[0], addFds); err != nil {
			// bdrv_make_empty's words, naming the image as it was given.
			var errno unix.Errno
			if errors.As(err, &errno) {
				return fmt.Errorf("Failed to empty %s: %s", filename, qtool.Strerror(err))
			}
			return fmt.Errorf("Failed to empty %s: %s", filename, qtool.Message(err))
		}
	}
	return nil
}

// commitChain copies what chain[:len-1] allocate into chain[len-1].
func (e *env) commitChain(chain []chainLink, addFds []cmdline.Occurrence, prog *imgProgress) error {
	s, ok := e.newSession(addFds)
	if !ok {
		return fmt.Errorf("could not install the fd sets")
	}
	defer s.close()
	last := len(chain) - 1
	var nodes []*block.Node
	prev := ""
	for i := last; i >= 0; i-- {
		o := block.Options{
			"driver":    chain[i].driver,
			"node-name": fmt.Sprintf("commit%d", i),
			"file":      chain[i].fileOpts.Clone(),
			// QEMU's img_commit opens the chain with BDRV_O_UNMAP: the
			// zeroes the commit writes deallocate base's clusters.
			"discard": "unmap",
		}
		if i == last {
			o["read-only"] = false
		} else {
			o["read-only"] = true
			if chain[i].driver != "qcow2" {
				return fmt.Errorf("'%s' has no backing file", chain[i].file)
			}
			o["backing"] = prev
		}
		n, err := s.g.Add(o)
		if err != nil {
			return fmt.Errorf("Could not open '%s': %s", chain[i].file, qtool.Message(err))
		}
		prev = n.Name()
		nodes = append([]*block.Node{n}, nodes...)
	}
	top, baseNode := nodes[0], nodes[last]
	// One engine, one job: the commit job of a live VMM, on a graph with
	// no guest; it takes the base's write permission itself.
	j, err := jobs.NewManager(nil).Start(jobs.Spec{ID: "commit", Type: "commit", AutoFinalize: true, AutoDismiss: true},
		&jobs.Commit{Graph: s.g, Top: top, Base: baseNode, KeepChain: true, Unmap: true, OnProgress: prog.print})
	if err != nil {
		return err
	}
	<-j.Done()
	err = j.Err()
	var ee *engine.Error
	if errors.As(err, &ee) && ee.Op == engine.OpResize {
		return fmt.Errorf("Top image %s is larger than base image %s, and resize of base image failed: %s",
			chain[0].file, chain[last].file, qtool.Message(ee.Err))
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		// qemu-img's run_block_job: the job's errno, under its own words.
		return fmt.Errorf("Block job failed: %s", qtool.Strerror(err))
	}
	return err
}

// emptyImage makes every cluster of the image unallocated, as qemu-img
// commit's bdrv_make_empty (qcow2's full discards).
func (e *env) emptyImage(img chainLink, addFds []cmdline.Occurrence) error {
	if img.driver != "qcow2" {
		return nil // qemu-img ignores ENOTSUP from make_empty
	}
	s, ok := e.newSession(addFds)
	if !ok {
		return fmt.Errorf("could not install the fd sets")
	}
	defer s.close()
	n, err := s.g.Add(block.Options{
		"driver": "qcow2", "discard": "unmap", "backing": nil,
		"file": img.fileOpts.Clone(),
	})
	if err != nil {
		return err
	}
	if _, err := s.g.Attach("", n, block.Perm{Write: true}); err != nil {
		return err
	}
	empty, ok := n.Image().(interface{ MakeEmpty() error })
	if !ok {
		return nil
	}
	if err := empty.MakeEmpty(); err != nil {
		return err
	}
	return n.Flush()
}
