package main

import (
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

func (v *vmm) addDrive(value string) error {
	d, err := cmdline.ParseDrive(value)
	if err != nil {
		return err
	}
	node := block.Options{
		"read-only": d.ReadOnly,
		"file":      block.Options{"driver": block.ProtocolFor(d.File), "filename": d.File},
	}
	var format string
	if d.Format != nil {
		format = *d.Format
	} else if block.ProtocolFor(d.File) != "file" {
		return fmt.Errorf("minivmm does not probe the format of '%s': give format=", d.File)
	} else {
		if format, err = v.probe(d.File); err != nil {
			return err
		}
		if !d.ReadOnly && format != "raw" {
			return fmt.Errorf("Image format was not specified for '%s' and probing guessed %s: give format=%s to open it writable", d.File, format, format)
		}
		fmt.Fprint(v.stderr, probedWarning(d.File, format, d.ReadOnly))
	}
	node["driver"] = format
	if d.NodeName != nil {
		node["node-name"] = *d.NodeName
	}
	if d.Cache != nil {
		node["cache"] = block.Options{"direct": d.Cache.Direct, "no-flush": d.Cache.NoFlush}
	}
	if d.Discard != "" {
		node["discard"] = d.Discard
	}
	if d.DetectZeroes != "" {
		node["detect-zeroes"] = d.DetectZeroes
	}
	if d.AIO != "" && block.ProtocolFor(d.File) == "file" {
		// QEMU's aio= is a flag only the file driver reads.
		node["file"].(block.Options)["aio"] = d.AIO
	}
	// As QEMU's -drive: auto-read-only unless told otherwise, so the file
	// is held read-only until a writer (a device, a job) attaches.
	node["auto-read-only"] = d.AutoReadOnly
	n, err := v.graph.Add(node)
	if err != nil {
		return err
	}
	id := d.ID
	for i := 0; id == ""; i++ {
		// QEMU's name for an anonymous drive: none0, virtio0, ...
		if _, taken := v.graph.Backend(fmt.Sprintf("%s%d", d.If, i)); !taken {
			id = fmt.Sprintf("%s%d", d.If, i)
		}
	}
	if d.If == "virtio" {
		v.virtioDrives = append(v.virtioDrives, id) // gets a device (guest.go)
	}
	// No guest device exists to write through the drive yet: it holds no
	// write permission, as a device-less QEMU -drive does.
	if _, err := v.graph.AttachOwning(id, n, block.Perm{}); err != nil {
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
