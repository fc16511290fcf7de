package imgtool

// minivmm img rebase: qemu-img rebase over minivmm's block layer. The
// image is opened read-write over its old backing chain; the new backing
// file is opened read-only beside it. In safe mode every range the image
// does not allocate itself and where the old and new backing chains read
// differently (sector by sector, as qemu-img compares) is written into the
// image from the old chain, so that what the guest sees does not change;
// then (and with -u, only) the header's backing file name and format are
// rewritten (qcow2.SetBacking).

import (
	"bytes"
	"fmt"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["rebase"] = imgCommand{run: runImgRebase,
		usage: "rebase [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] [-add-fd fd=N,set=M] -b backing_file [-F backing_fmt] filename"}
}

// rebaseChunk is how much of each chain one comparison reads (qemu-img's
// IO_BUF_SIZE, which its progress steps follow).
const rebaseChunk = 2 << 20

func runImgRebase(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	var format, backingFmt, backing string
	haveBacking, unsafe, progress, quiet := false, false, false, false
	a, rc, ok := e.getopt(args, "f:F:b:upt:T:qU", nil, func(c rune, arg string) bool {
		switch c {
		case 'f':
			format = arg
		case 'F':
			backingFmt = arg
		case 'b':
			backing, haveBacking = arg, true
		case 'u':
			unsafe = true
		case 'p':
			progress = true
		case 'q':
			quiet = true
		case 't', 'T', 'U':
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
	if !unsafe && !haveBacking {
		fmt.Fprintf(stderr, "%s: Must specify backing file (-b) or use unsafe mode (-u)\n", e.prog)
		return e.tryHelp()
	}
	// As qemu-img, progress starts here and ends whatever happens next.
	prog := newImgProgress(stdout, progress, 2)
	prog.set(0)
	defer prog.end()
	if backing == "" {
		backingFmt = ""
	} else if backingFmt == "" {
		fmt.Fprintf(stderr, "%s: Could not change the backing file to '%s': backing format must be specified\n", e.prog, backing)
		return 1
	}
	if backingFmt != "" {
		if _, ok := block.LookupDriver(backingFmt); !ok {
			fmt.Fprintf(stderr, "%s: Invalid format name: '%s'\n", e.prog, backingFmt)
			return 1
		}
	}

	s, ok := e.newSession(a.addFds)
	if !ok {
		return 1
	}
	defer s.close()
	var node *block.Node
	var err error
	if unsafe {
		// Opened without its backing file, which need not exist.
		if format == "" {
			if format, err = s.probe(filename); err != nil {
				fmt.Fprintf(stderr, "%s: Could not open '%s': %s\n", e.prog, filename, qtool.Message(err))
				return 1
			}
		}
		node, err = s.g.Add(block.Options{"driver": format, "backing": nil,
			"file": block.Options{"driver": "file", "filename": filename}})
		if err != nil && format != "qcow2" {
			fmt.Fprintf(stderr, "%s: Could not change the backing file to '%s': Operation not supported\n", e.prog, backing)
			return 1
		}
	} else {
		node, err = s.open(&qtool.OpenFlags{File: filename, Format: format})
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: Could not open '%s': %s\n", e.prog, filename, qtool.Message(err))
		return 1
	}
	if _, err := s.g.Attach("", node, block.Perm{Write: true}); unsafe && err != nil {
		fmt.Fprintf(stderr, "%s: Could not open '%s': %s\n", e.prog, filename, qtool.Message(err))
		return 1
	}
	if node.Driver() != "qcow2" {
		fmt.Fprintf(stderr, "%s: Could not change the backing file to '%s': Operation not supported\n", e.prog, backing)
		return 1
	}
	if !unsafe {
		var newBacking *block.Node
		if backing != "" {
			path := pathCombine(fileOf(node), backing)
			newBacking, err = s.g.Add(block.Options{
				"driver": backingFmt, "read-only": true,
				"file": block.Options{"driver": "file", "filename": path},
			})
			if err != nil {
				fmt.Fprintf(stderr, "%s: Could not open new backing file '%s': %s\n", e.prog, path, qtool.Message(err))
				return 1
			}
		}
		// Where the new backing file is in the old chain, only what
		// the images above it allocate can differ (qemu-img 7.2's
		// prefix_chain_bs).
		var prefix *block.Node
		for l := node.Child("backing"); l != nil && backing != ""; l = l.Child("backing") {
			if sameImage(pathCombine(fileOf(node), backing), fileOf(l)) {
				prefix = l
				break
			}
		}
		if err := rebaseCopy(node, node.Child("backing"), newBacking, prefix, prog); err != nil {
			fmt.Fprintf(stderr, "%s: %s\n", e.prog, qtool.Message(err))
			return 1
		}
	}
	err = qcow2.SetBacking(node, backing, backingFmt)
	prog.set(100) // even when that failed, as qemu-img
	if err != nil {
		fmt.Fprintf(stderr, "%s: Could not change the backing file to '%s': %s\n", e.prog, backing, qtool.Message(err))
		return 1
	}
	return 0
}

// readChain reads n's content at off into p, zeroes past its end or
// without n.
func readChain(n *block.Node, p []byte, off int64) error {
	clear(p)
	if n == nil || off >= n.Length() {
		return nil
	}
	_, err := n.ReadAt(p[:min(int64(len(p)), n.Length()-off)], off)
	return err
}

// rebaseCopy writes into img, where it allocates nothing itself, the
// sectors where old and new (either may be nil) read differently. It
// steps through img as qemu-img 7.2's rebase does, since its progress
// follows the steps: at most rebaseChunk at a time, cut where either
// backing file ends, and, where the new backing file is prefix (in the
// old chain), skipping what no image above prefix allocates. Each step
// compared moves the progress by one chunk's share.
func rebaseCopy(img, old, new, prefix *block.Node, prog *imgProgress) error {
	size := img.Length()
	a := make([]byte, rebaseChunk)
	b := make([]byte, rebaseChunk)
	var share float32
	if size > 0 {
		share = 100 / float32(size/min(size, rebaseChunk))
	}
	var n int64
	for off := int64(0); off < size; off += n {
		alloc, l, err := layerAllocated(img, off, min(rebaseChunk, size-off))
		if err != nil {
			return err
		}
		if n = l; alloc {
			continue
		}
		if prefix != nil {
			alloc, l, err := allocatedAbove(old, prefix, off, n)
			if err != nil {
				return err
			}
			if n = l; !alloc {
				continue
			}
		}
		for _, bk := range []*block.Node{old, new} {
			if bk != nil && off < bk.Length() {
				n = min(n, bk.Length()-off)
			}
		}
		if err := readChain(old, a[:n], off); err != nil {
			return err
		}
		if err := readChain(new, b[:n], off); err != nil {
			return err
		}
		for i := int64(0); i < n; {
			j := i
			for j < n && !bytes.Equal(a[j:min(j+512, n)], b[j:min(j+512, n)]) {
				j = min(j+512, n)
			}
			if j > i {
				if _, err := img.WriteAt(a[i:j], off+i); err != nil {
					return err
				}
				i = j
				continue
			}
			i = min(i+512, n)
		}
		prog.add(share)
	}
	return img.Flush()
}

// allocatedAbove is QEMU's bdrv_is_allocated_above(top, base) without
// base: whether an image from top down to base's child allocates the
// range at off, and for how long that holds.
func allocatedAbove(top, base *block.Node, off, bytes int64) (bool, int64, error) {
	n := bytes
	for l := top; l != nil && l != base; l = l.Child("backing") {
		if off >= l.Length() {
			continue
		}
		alloc, ln, err := layerAllocated(l, off, min(bytes, l.Length()-off))
		if err != nil {
			return false, 0, err
		}
		if alloc {
			return true, ln, nil
		}
		if n > ln && (l == top || off+ln < l.Length()) {
			n = ln
		}
	}
	return false, n, nil
}

// layerAllocated is QEMU's bdrv_is_allocated: whether node itself
// allocates the range at off, and for how long that holds. Node's
// BlockStatus also ends a range where its backing file's status changes,
// so unallocated ranges are joined here.
func layerAllocated(node *block.Node, off, n int64) (bool, int64, error) {
	st, l, err := node.BlockStatus(off, n)
	if err != nil || st.Allocated {
		return st.Allocated, l, err
	}
	for l < n {
		next, ln, err := node.BlockStatus(off+l, n-l)
		if err != nil {
			return false, 0, err
		}
		if next.Allocated {
			break
		}
		l += ln
	}
	return false, l, nil
}
