package imgtool

// minivmm img snapshot: qemu-img snapshot (internal snapshots of qcow2
// images: list, create, apply, delete), with qemu-img 7.2's options,
// messages and exit codes. The work is block/qcow2's.

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["snapshot"] = imgCommand{run: runImgSnapshot,
		usage: "snapshot [--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] [-add-fd fd=N,set=M] filename"}
}

// imgSnapshotter is a format whose internal snapshots can be changed.
type imgSnapshotter interface {
	imgSnapshotLister
	CreateSnapshot(name string, at time.Time) error
	ApplySnapshot(idOrName string) error
	DeleteSnapshot(id, name string) error
}

func runImgSnapshot(e *env, args []string) int {
	var action rune
	var name string
	var quiet, imageOpts, forceShare bool
	mix := func() bool {
		fmt.Fprintf(e.stderr, "%s: Cannot mix '-l', '-a', '-c', '-d'\n", e.prog)
		e.tryHelp()
		return false
	}
	a, rc, ok := e.getopt(args, "la:c:d:qU", []qtool.LongOption{
		qtool.Opt("image-opts", false, 'I'), qtool.Opt("force-share", false, 'U'),
	}, func(c rune, arg string) bool {
		switch c {
		case 'l', 'a', 'c', 'd':
			if action != 0 {
				return mix()
			}
			action, name = c, arg
		case 'q':
			quiet = true
		case 'I':
			imageOpts = true
		case 'U':
			forceShare = true
		}
		return true
	})
	if !ok {
		return rc
	}
	filename, ok := e.image(a)
	if !ok {
		return 1
	}
	_ = quiet // qemu-img snapshot prints nothing but errors and -l

	s, ok := e.newSession(a.addFds)
	if !ok {
		return 1
	}
	defer s.close()
	op, err := qtool.Open(s.g, &qtool.OpenFlags{File: filename, ImageOpts: imageOpts, ReadOnly: action == 'l', ForceShare: forceShare}, block.ProbeAny, e.stderr)
	if err != nil {
		fmt.Fprintf(e.stderr, "%s: Could not open '%s': %s\n", e.prog, filename, qtool.Message(err))
		return 1
	}
	sn, _ := op.Node.Image().(imgSnapshotter)
	fail := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "%s: "+format+"\n", append([]any{e.prog}, a...)...)
		return 1
	}
	switch action {
	case 'l':
		if sn == nil {
			return 0
		}
		snaps, err := sn.Snapshots()
		if err != nil || len(snaps) == 0 {
			return 0
		}
		var b strings.Builder
		b.WriteString("Snapshot list:\n")
		snapshotTable(&b, snaps)
		fmt.Fprint(e.stdout, b.String())
	case 'c':
		var err error = unix.ENOTSUP
		if sn != nil {
			err = sn.CreateSnapshot(name, time.Now())
		}
		if err != nil {
			return fail("Could not create snapshot '%s': %d (%s)", name, -int(qtool.Errno(err)), qtool.Strerror(err))
		}
	case 'a':
		if sn == nil {
			if op.ProbedRaw() {
				// QEMU's fallback reopens the image below, probing (and
				// warning) again.
				qtool.ProbedRawWarning(e.stderr, filename)
			}
			return fail("Could not apply snapshot '%s': Block driver does not support snapshots", name)
		}
		if err := sn.ApplySnapshot(name); err != nil {
			if reportedError(err) {
				fail("%s", qtool.Message(err))
			}
			return fail("Could not apply snapshot '%s': Failed to load snapshot: %s", name, qtool.Strerror(err))
		}
	case 'd':
		// As qemu-img: the snapshot is looked up by name only.
		var found *qcow2.SnapshotInfo
		if sn != nil {
			snaps, _ := sn.Snapshots()
			for i := range snaps {
				if snaps[i].Name == name {
					found = &snaps[i]
					break
				}
			}
		}
		if found == nil {
			return fail("Could not delete snapshot '%s': snapshot not found", name)
		}
		if err := sn.DeleteSnapshot(found.ID, found.Name); err != nil {
			// A step QEMU names is printed with the errno beneath.
			var step interface{ QEMUStep() string }
			if errors.As(err, &step) {
				return fail("Could not delete snapshot '%s': %s: %s", name, step.QEMUStep(), qtool.Strerror(err))
			}
			return fail("Could not delete snapshot '%s': %s", name, qtool.Message(err))
		}
	}
	return 0
}
