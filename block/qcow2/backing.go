package qcow2

import (
	"fmt"
	"path/filepath"
	"strings"

	"minivmm/block"
	"minivmm/qemuopen"
)

// maxChainDepth bounds a backing chain that loops through names that
// differ (symlinks, hard links); loops through one name are found by name.
const maxChainDepth = 1000

// backingPath is where the backing file name from the header of an image
// whose file child is named overlay is to be found: an absolute name as
// is; a relative one in the overlay's directory, as QEMU resolves it
// (bdrv_get_full_backing_filename), unless the overlay has no directory
// to speak of (an fdset, a json: description), when it is used as given.
func backingPath(name, overlay string) string {
	if filepath.IsAbs(name) || overlay == "" ||
		strings.HasPrefix(overlay, "/dev/fdset/") || strings.HasPrefix(overlay, "json:") {
		return name
	}
	return filepath.Join(filepath.Dir(overlay), name)
}

// canonical makes equal names of one file compare equal where it can.
func canonical(name string) string {
	if strings.HasPrefix(name, "/dev/fdset/") || strings.HasPrefix(name, "json:") {
		return name
	}
	if abs, err := filepath.Abs(name); err == nil {
		name = abs
	}
	if real, err := filepath.EvalSymlinks(name); err == nil {
		name = real
	}
	return name
}

// openBacking opens the backing file the header names, read-only, as the
// node's "backing" child, in the format the backing format extension
// names. Without one, the file is probed, but only raw is accepted: a
// probe must never turn a raw image (whose bytes a guest wrote) into a
// format that could name files of its own. It is opened through the
// graph, so it goes through the same file registry (fdsets, -fdset-only).
func openBacking(o *block.OpenContext, name, format string, overlay string) (*block.Node, error) {
	if rest, ok := strings.CutPrefix(name, "json:"); ok {
		return openJSONBacking(o, name, rest, format, overlay)
	}
	path := backingPath(name, overlay)
	if strings.HasPrefix(overlay, "json:") && !filepath.IsAbs(name) {
		// Relative to the directory of the file below the json:
		// description, if there is one (QEMU's bdrv_dirname).
		if dir, ok := o.ChildDirname("file"); ok {
			path = dir + name
		}
	}
	proto := block.ProtocolFor(name)
	if proto != "file" {
		// A URL (a base served over NBD): neither relative nor probed.
		path = name
		if format == "" {
			return nil, fmt.Errorf("Could not open backing file: the image does not say the format of '%s'; record it with 'qemu-img rebase -u -b %s -F FORMAT'", name, name)
		}
	}
	if d, err := o.BackingOptions().String("driver", ""); err == nil && d != "" {
		format = d // given: the header's format is not used (QEMU: backing.driver)
	}
	if _, known := block.LookupDriver(format); format != "" && !known {
		return nil, fmt.Errorf("Could not open backing file: Unknown driver '%s'", format)
	}
	leave, err := o.EnterChain(canonical(overlay), maxChainDepth)
	if err != nil {
		return nil, err
	}
	defer leave()
	if format == "" {
		if format, err = probe(o.Files, path); err != nil {
			return nil, fmt.Errorf("Could not open backing file: %w", err)
		}
		if format != "raw" {
			return nil, fmt.Errorf("Could not open backing file: the image does not say the format of '%s', and minivmm does not take a probed %s for a backing file; record it with 'qemu-img rebase -u -b %s -F %s', or give backing.driver", name, format, name, format)
		}
	}
	n, err := o.OpenChild("backing", block.Options{
		"driver":    format,
		"read-only": true,
		"file":      block.Options{"driver": proto, "filename": path},
	})
	if err != nil {
		return nil, fmt.Errorf("Could not open backing file: %w", err)
	}
	return n, nil
}

// probe names the format of path's first bytes, with the block layer's
// one probe rule.
func probe(files *qemuopen.Registry, path string) (string, error) {
	return block.ProbeFile(files, path)
}

// openJSONBacking opens a backing file the header names with a json:
// description (QEMU's bdrv_open of a json: filename): its options as
// given, the header's backing format as the driver where they name none.
func openJSONBacking(o *block.OpenContext, name, rest, format, overlay string) (*block.Node, error) {
	opts, err := block.ParseJSONFilename(rest)
	if err != nil {
		return nil, fmt.Errorf("Could not open backing file: %w", err)
	}
	if d, err := o.BackingOptions().String("driver", ""); err == nil && d != "" {
		format = d
	}
	if d, _ := opts.String("driver", ""); d == "" {
		if format == "" {
			return nil, fmt.Errorf("Could not open backing file: the image does not say the format of '%s'; record it with 'qemu-img rebase -u -b NAME -F FORMAT'", name)
		}
		opts["driver"] = format
	}
	leave, err := o.EnterChain(canonical(overlay), maxChainDepth)
	if err != nil {
		return nil, err
	}
	defer leave()
	opts["read-only"] = true
	n, err := o.OpenChild("backing", opts)
	if err != nil {
		return nil, fmt.Errorf("Could not open backing file: %w", err)
	}
	return n, nil
}
