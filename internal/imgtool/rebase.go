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
	"context"
	"fmt"

	"minivmm/block"
	"minivmm/block/engine"
	"minivmm/block/qcow2"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["rebase"] = imgCommand{run: runImgRebase,
		usage: "rebase [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] [-add-fd fd=N,set=M] -b backing_file [-F backing_fmt] filename"}
}

func runImgRebase(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	var format, backingFmt, backing string
	haveBacking, unsafe, progress, quiet, forceShare, imageOpts := false, false, false, false, false, false
	a, rc, ok := e.getopt(args, "f:F:b:upt:T:qU", []qtool.LongOption{qtool.Opt("image-opts", false, 'I'), qtool.Opt("force-share", false, 'U')}, func(c rune, arg string) bool {
		switch c {
		case 'I':
			imageOpts = true
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
		case 'U':
			// As qemu-img: for the backing files, which are only read.
			forceShare = true
		case 't', 'T':
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
		if !knownFormatName(backingFmt) {
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
	if unsafe && imageOpts {
		// Opened without its backing file, which need not exist.
		var o block.Options
		if o, err = (&qtool.OpenFlags{File: filename, ImageOpts: true}).Options(s.g); err == nil {
			o["backing"] = nil
			node, err = s.g.Add(o)
		}
	} else if unsafe {
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
		node, err = s.open(&qtool.OpenFlags{File: filename, Format: format, ImageOpts: imageOpts})
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
				"driver": backingFmt, "read-only": true, "force-share": forceShare,
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
		step := float32(0)
		err := engine.Rebase(context.Background(), node, node.Child("backing"), newBacking, prefix, engine.Options{
			Progress: func(_, total int64) {
				if step == 0 {
					step = 100 / float32(total)
				}
				prog.add(step)
			},
		})
		if err != nil {
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
