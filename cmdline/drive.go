package cmdline

import (
	"errors"
	"fmt"
)

// Drive is a -drive option: the legacy way to get a named backend (what
// devices and query-block know) over a format node on a file.
type Drive struct {
	ID       string // empty: the caller names it as QEMU does (none0, ...)
	File     string
	Format   *string // nil: probe
	If       string
	NodeName *string
	ReadOnly bool
	// Cache is the cache= mode as cache.direct and cache.no-flush; nil
	// when cache= was not given.
	Cache *DriveCache
	// Discard is discard= in blockdev's spelling ("unmap" or "ignore"),
	// empty when not given.
	Discard      string
	DetectZeroes string // "off", "on" or "unmap"; empty when not given
	AIO          string // "threads", "native" or "io_uring"; empty when not given
	AutoReadOnly bool   // QEMU's -drive default is on
}

// DriveCache is what a -drive cache= mode sets on the node. writethrough
// and directsync also turn off the guest's write cache, which only
// devices see.
type DriveCache struct{ Direct, NoFlush bool }

// driveCacheModes are QEMU's bdrv_parse_cache_mode names.
var driveCacheModes = map[string]DriveCache{
	"writeback": {}, "writethrough": {}, "unsafe": {NoFlush: true},
	"none": {Direct: true}, "off": {Direct: true}, "directsync": {Direct: true},
}

// driveOpts are the -drive parameters minivmm has, as QEMU's
// query-command-line-options lists them: QEMU merges four tables, each
// listed last-declared first; they are kept here in the reverse of QEMU's
// listing, like the other tables. "id", and the legacy "readonly" and
// "cache" that QEMU turns into other keys before it checks them, are
// accepted and not listed, as in QEMU.
var driveOpts = Params{
	{"node-name", OptString, "Node name of the block device node"},
	{"auto-read-only", OptBool, "Node can become read-only if opening read-write fails"},
	{"discard", OptString, "discard operation (ignore/off, unmap/on)"},
	{"aio", OptString, "host AIO implementation (threads, native, io_uring)"},
	{"format", OptString, "disk format (raw, qcow2, ...)"},
	{"detect-zeroes", OptString, "try to optimize zero writes (off, on, unmap)"},
	{"if", OptString, "interface (ide, scsi, sd, mtd, floppy, pflash, virtio)"},
	{"file", OptString, "file name"},
	{"read-only", OptBool, "open drive file as read-only"},
}

var driveParams = func() map[string]Kind {
	k := withID(driveOpts.kinds())
	k["cache"] = OptString
	return k
}()

// ParseDrive parses the argument of -drive, "file=F,if=none[,format=raw|
// qcow2][,id=ID][,node-name=N][,read-only=on][,cache=MODE][,discard=on|
// off][,detect-zeroes=on|off|unmap][,auto-read-only=on|off]", with
// QEMU's checks in QEMU's order: the alias readonly= first, then cache=,
// then the keys' types, then if= and file=.
func ParseDrive(value string) (Drive, error) {
	o, err := ParseOpts(value, "") // QEMU implies no key: "-drive f.img" is not a file
	if err != nil {
		return Drive{}, err
	}
	if err := renameAlias(o, "readonly", "read-only"); err != nil {
		return Drive{}, err
	}
	d := Drive{ID: o.ID}
	if mode, ok := o.Get("cache"); ok {
		c, known := driveCacheModes[mode]
		if !known {
			return Drive{}, errors.New("invalid cache option")
		}
		d.Cache = &c
	}
	if err := o.Validate(driveParams); err != nil {
		return Drive{}, err
	}
	d.ReadOnly, _ = o.Bool("read-only", false)
	d.AutoReadOnly, _ = o.Bool("auto-read-only", true)
	if v, ok := o.Get("format"); ok {
		d.Format = &v
	}
	if v, ok := o.Get("node-name"); ok {
		d.NodeName = &v
	}
	if v, ok := o.Get("detect-zeroes"); ok {
		if v != "off" && v != "on" && v != "unmap" {
			return Drive{}, fmt.Errorf("invalid parameter value: %s", v)
		}
		d.DetectZeroes = v
	}
	if v, ok := o.Get("aio"); ok {
		if v != "threads" && v != "native" && v != "io_uring" {
			return Drive{}, errors.New("invalid aio option")
		}
		d.AIO = v
	}
	if v, ok := o.Get("discard"); ok {
		// -drive still takes the old on/off spellings.
		if d.Discard = map[string]string{"on": "unmap", "off": "ignore", "unmap": "unmap", "ignore": "ignore"}[v]; d.Discard == "" {
			return Drive{}, errors.New("Invalid discard option")
		}
	}
	var ok bool
	if d.If, ok = o.Get("if"); !ok || d.If != "none" && d.If != "virtio" {
		return Drive{}, errors.New("minivmm has only virtio-blk devices: use if=virtio, or if=none and attach the drive by its id (-device)")
	}
	if d.File, ok = o.Get("file"); !ok {
		return Drive{}, errors.New("Parameter 'file' is missing")
	}
	return d, nil
}

// renameAlias turns the legacy key from into to, refusing both at once
// with QEMU's qemu_opt_rename text.
func renameAlias(o *Opts, from, to string) error {
	_, hasFrom := o.Get(from)
	if _, hasTo := o.Get(to); hasFrom && hasTo {
		return fmt.Errorf("'%s' and its alias '%s' can't be used at the same time", to, from)
	}
	for i := range o.Elems {
		if o.Elems[i].Key == from {
			o.Elems[i].Key = to
		}
	}
	return nil
}
