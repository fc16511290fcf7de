package imgtool

// img check and a qcow2 image's external data file: the check reads the
// metadata itself, but opens the data file as QEMU's open of the image
// does, so that a missing one fails the same way.

import (
	"errors"

	"minivmm/block"
	"minivmm/block/qcow2"
)

// openCheckDataFile opens (and leaves to the session to close) the data
// file of the qcow2 image in file: the data-file option of the image's
// options (--image-opts), else the name in its header.
func openCheckDataFile(graph *block.Graph, file *block.Node, imageOpts block.Options, readOnly, forceShare bool) error {
	name, external, err := qcow2.DataFileOf(file)
	if err != nil || !external {
		return nil // the check itself reports a header it cannot read
	}
	var opts block.Options
	switch v := imageOpts["data-file"].(type) {
	case block.Options:
		opts = v.Clone()
	case string:
		if _, ok := graph.Node(v); ok {
			return nil
		}
		return errors.New("Cannot find device='" + v + "' nor node-name='" + v + "'")
	default:
		if name == "" {
			return errors.New("'data-file' is required for this image")
		}
		opts = block.Options{"driver": block.ProtocolFor(name), "filename": name}
	}
	if _, set := opts["read-only"]; !set {
		opts["read-only"] = readOnly
	}
	opts["force-share"] = forceShare
	_, err = graph.Add(opts)
	return err
}
