package main

import (
	"errors"
	"fmt"
	"strings"

	"minivmm/block"
	"minivmm/cmdline"
)

// addBlockdevs opens every -blockdev and -drive, in command-line order.
func (v *vmm) addBlockdevs(occ []cmdline.Occurrence) error {
	for _, oc := range occ {
		var err error
		switch oc.Name {
		case "blockdev":
			err = v.addBlockdev(oc.Value)
		case "drive":
			err = v.addDrive(oc.Value)
		}
		if err != nil {
			return oc.Wrap(err)
		}
	}
	return nil
}

func (v *vmm) addBlockdev(value string) error {
	m, err := cmdline.ParseBlockdevArg(value)
	if err != nil {
		return err
	}
	o := block.Options(m)
	if !strings.HasPrefix(value, "{") {
		o = block.FromKeyval(m)
	}
	_, err = v.graph.AddRoot(o)
	return err
}

// driveParams are the -drive options minivmm has: the legacy way to get a
// named backend (what devices and query-block know) over a node graph.
var driveParams = map[string]cmdline.Kind{
	"id": cmdline.OptString, "file": cmdline.OptString, "format": cmdline.OptString, "if": cmdline.OptString,
	"node-name": cmdline.OptString, "readonly": cmdline.OptBool, "cache": cmdline.OptString,
	"discard": cmdline.OptString, "detect-zeroes": cmdline.OptString, "auto-read-only": cmdline.OptBool,
}

// cacheModes maps -drive cache= to cache.direct and cache.no-flush
// (writethrough and directsync also turn the guest's write cache off,
// which only devices see).
var cacheModes = map[string][2]bool{
	"writeback": {false, false}, "none": {true, false}, "writethrough": {false, false},
	"directsync": {true, false}, "unsafe": {false, true},
}

func (v *vmm) addDrive(value string) error {
	opts, err := cmdline.ParseOpts(value, "file")
	if err != nil {
		return err
	}
	if err := opts.Validate(driveParams); err != nil {
		return err
	}
	if iface, ok := opts.Get("if"); !ok || iface != "none" {
		return errors.New("minivmm has no guest devices: use if=none and attach the drive by its id")
	}
	file, ok := opts.Get("file")
	if !ok {
		return errors.New("Parameter 'file' is missing")
	}
	readonly, err := opts.Bool("readonly", false)
	if err != nil {
		return err
	}
	node := block.Options{
		"read-only": readonly,
		"file":      block.Options{"driver": "file", "filename": file},
	}
	format, ok := opts.Get("format")
	if !ok {
		if format, err = v.probe(file); err != nil {
			return err
		}
		if !readonly && format != "raw" {
			return fmt.Errorf("Image format was not specified for '%s' and probing guessed %s: give format=%s to open it writable", file, format, format)
		}
		fmt.Fprint(v.stderr, probedWarning(file, format, readonly))
	}
	node["driver"] = format
	if name, ok := opts.Get("node-name"); ok {
		node["node-name"] = name
	}
	if mode, ok := opts.Get("cache"); ok {
		flags, known := cacheModes[mode]
		if !known {
			return fmt.Errorf("invalid cache option")
		}
		node["cache"] = block.Options{"direct": flags[0], "no-flush": flags[1]}
	}
	if val, ok := opts.Get("discard"); ok {
		// -drive still takes the old on/off spellings.
		node["discard"] = map[string]string{"on": "unmap", "off": "ignore"}[val]
		if node["discard"] == "" {
			node["discard"] = val
		}
	}
	if val, ok := opts.Get("detect-zeroes"); ok {
		node["detect-zeroes"] = val
	}
	// As QEMU's -drive: auto-read-only unless told otherwise, so the file
	// is held read-only until a writer (a device, a job) attaches.
	aro, err := opts.Bool("auto-read-only", true)
	if err != nil {
		return err
	}
	node["auto-read-only"] = aro
	n, err := v.graph.Add(node)
	if err != nil {
		return err
	}
	id := opts.ID
	for i := 0; id == ""; i++ {
		// QEMU's name for an anonymous if=none drive.
		if _, taken := v.graph.Backend(fmt.Sprintf("none%d", i)); !taken {
			id = fmt.Sprintf("none%d", i)
		}
	}
	// No guest device exists to write through the drive yet: it holds no
	// write permission, as a device-less QEMU -drive does.
	if _, err := v.graph.Attach(id, n, block.Perm{}); err != nil {
		v.graph.Delete(n.Name())
		return err
	}
	return nil
}

// probe names the format of a file's first bytes (through qemu_open, so
// fdsets work), with the block layer's one probe rule. Probing only ever
// reads.
func (v *vmm) probe(filename string) (string, error) {
	return block.ProbeFile(v.fds, filename)
}
