package imgtool

// convert -l: the source read as one of its internal snapshots, named
// as qemu-img takes it: "snapshot.id=ID,snapshot.name=NAME" (either, or
// both), or an ID or name alone (the ID tried first).

import (
	"errors"
	"fmt"
	"strings"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/cmdline"
)

type convertSnapshot struct {
	id, name *string // nil: any
	idOrName bool    // a bare -l ARG: id, then name
}

// parseConvertSnapshot reads -l's argument, printing qemu-img's errors.
func (e *env) parseConvertSnapshot(arg string) (*convertSnapshot, bool) {
	if !strings.HasPrefix(arg, "snapshot.") {
		return &convertSnapshot{id: &arg, name: &arg, idOrName: true}, true
	}
	opts, err := cmdline.ParseOpts(arg, "")
	bad := func(msg string) (*convertSnapshot, bool) {
		fmt.Fprintf(e.stderr, "%s: %s\n%s: Failed in parsing snapshot param '%s'\n", e.prog, msg, e.prog, arg)
		return nil, false
	}
	if err != nil {
		return bad(err.Error())
	}
	var sn convertSnapshot
	for _, k := range opts.Keys() {
		v, _ := opts.Get(k)
		switch k {
		case "snapshot.id":
			sn.id = &v
		case "snapshot.name":
			sn.name = &v
		default:
			return bad(fmt.Sprintf("Invalid parameter '%s'", k))
		}
	}
	return &sn, true
}

// imgSnapshotLoader is a format that can show an internal snapshot in
// place of its active state.
type imgSnapshotLoader interface {
	LoadSnapshot(match func(id, name string) bool) error
}

// load shows the snapshot in n, in QEMU's words when it cannot.
func (sn *convertSnapshot) load(n *block.Node) error {
	l, ok := n.Image().(imgSnapshotLoader)
	if !ok {
		return fmt.Errorf("Block format '%s' used by device '' does not support temporarily loading internal snapshots", n.Driver())
	}
	is := func(want *string, v string) bool { return want == nil || *want == v }
	var err error
	if sn.idOrName {
		if err = l.LoadSnapshot(func(id, _ string) bool { return id == *sn.id }); errors.Is(err, qcow2.ErrSnapshotNotFound) {
			err = l.LoadSnapshot(func(_, name string) bool { return name == *sn.name })
		}
	} else {
		err = l.LoadSnapshot(func(id, name string) bool { return is(sn.id, id) && is(sn.name, name) })
	}
	if errors.Is(err, qcow2.ErrSnapshotNotFound) {
		return errors.New("Can't find snapshot")
	}
	return err
}
