package iotool

import (
	"fmt"
	"os"

	"minivmm/block"
	"minivmm/block/objects"
	"minivmm/block/qcow2"
	"minivmm/cmdline"
)

// validAIO is qemu-io's bdrv_parse_aio: the modes QEMU on Linux knows.
func validAIO(mode string) bool {
	return mode == "threads" || mode == "native" || mode == "io_uring"
}

// userObjects are the --object types qemu-io accepts that minivmm can
// hold: a secret (checked as QEMU checks it, then unused: no driver here
// decrypts), TLS credentials the nbd driver uses; the TLS types minivmm
// cannot build are refused by the registry in its own words.
var userObjects = map[string]bool{"secret": true, "tls-creds-x509": true, "tls-creds-psk": true, "tls-creds-anon": true}

// addObject creates an --object as QEMU's user_creatable_add_from_str
// would, in its words.
func addObject(objs *objects.Registry, def string) error {
	m, err := cmdline.ParseKeyval(def, "qom-type")
	if err != nil {
		return err
	}
	typ, _ := m["qom-type"].(string)
	if !userObjects[typ] {
		return fmt.Errorf("invalid object type: %s", typ)
	}
	return objs.Add(m, true)
}

// snapshotOverlay puts a temporary qcow2 over base, as qemu-io -s does
// (bdrv_append_temp_snapshot): writes go to it and vanish at exit. The
// file is unlinked once open.
func (t *ioTool) snapshotOverlay(base *block.Node) (*block.Node, *block.Backend, error) {
	dir := os.Getenv("TMPDIR")
	if dir == "" {
		dir = "/var/tmp"
	}
	f, err := os.CreateTemp(dir, "vl.")
	if err != nil {
		return nil, nil, fmt.Errorf("Could not get temporary filename: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	err = qcow2.Create(osTarget{f}, qcow2.CreateOptions{Size: uint64(base.Length())})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("Could not create temporary overlay '%s': %w", name, err)
	}
	op, err := t.g.Open(block.Options{
		"driver":  "qcow2",
		"file":    block.Options{"driver": "file", "filename": name},
		"backing": base.Name(),
	}, block.ProbeAny)
	if err != nil {
		return nil, nil, err
	}
	b, err := t.g.Attach("", op.Node, block.Perm{Write: true})
	if err != nil {
		return nil, nil, err
	}
	return op.Node, b, nil
}

type osTarget struct{ *os.File }

func (o osTarget) Truncate(size int64) error { return o.File.Truncate(size) }

// readAt is a read as the command asks it: with -C, what the node does
// not hold itself (read from its backing file, or zeroes) is copied into
// it in whole clusters, as QEMU's copy-on-read does, zeroes as zero
// writes.
func (t *ioTool) readAt(p []byte, off int64) error {
	if _, err := t.node.ReadAt(p, off); err != nil || !t.copyOnRead {
		return err
	}
	cs := int64(512)
	if c, ok := t.node.Image().(interface{ ClusterSize() int64 }); ok {
		cs = c.ClusterSize()
	}
	start, end := off&^(cs-1), min((off+int64(len(p))+cs-1)&^(cs-1), t.node.Length())
	for pos := start; pos < end; {
		st, n, err := t.node.BlockStatus(pos, end-pos)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if !st.Allocated {
			buf := make([]byte, n)
			if _, err := t.node.ReadAt(buf, pos); err != nil {
				return err
			}
			if allZero(buf) {
				err = t.node.WriteZeroes(pos, n, false)
				// A format may leave zeroes it already reads unallocated;
				// QEMU's copy-on-read allocates them all the same.
				if st, _, serr := t.node.BlockStatus(pos, n); err == nil && serr == nil && !st.Allocated {
					_, err = t.node.WriteAt(buf, pos)
				}
			} else {
				_, err = t.node.WriteAt(buf, pos)
			}
			if err != nil {
				return err
			}
		}
		pos += n
	}
	return nil
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}
