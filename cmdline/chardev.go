package cmdline

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Chardev is a character device for a monitor: a listening unix socket,
// bound to Path or inherited as an already listening Fd (libvirt's way),
// or the process's stdin and stdout ("stdio", for a human monitor).
type Chardev struct {
	ID string
	// Backend is "socket" or "stdio"; for -qmp and -monitor also "none"
	// (no monitor) and "chardev", a reference (chardev:ID) to the -chardev
	// named ID, nothing else set.
	Backend string
	Path    string // empty when Fd is used
	Fd      int    // -1 unless fd= was given
	Server  bool   // always true: client sockets are refused
	// Wait asks to block until a client connects before starting the
	// guest; QEMU's default for a server without wait=.
	Wait bool
}

// ErrClientSocket refuses sockets that would connect out: minivmm only
// listens.
var ErrClientSocket = errors.New("minivmm supports only listening sockets (server=on)")

var (
	qmpParams = map[string]Kind{
		"path": OptString, "fd": OptString, "server": OptBool, "wait": OptBool,
	}
	chardevParams = withID(chardevOpts.kinds())
	stdioParams   = map[string]Kind{"id": OptString, "backend": OptString}
)

// ParseQmp parses the argument of -qmp: "unix:PATH,server=on[,wait=off]"
// (or the legacy "unix:PATH,server,nowait"), "stdio" or "chardev:ID".
// ID is left empty but for chardev:ID: QEMU names these chardevs
// compat_monitorN, counting across options, which only the caller can do.
func ParseQmp(value string) (Chardev, error) {
	return parseMonitorDev(value, "-qmp takes unix:PATH,server=on, stdio or chardev:ID")
}

// parseMonitorDev parses the chardev of -qmp or -monitor given inline,
// the forms QEMU's qemu_chr_parse_compat takes that minivmm has; what
// names the forms minivmm has, for the error on others.
func parseMonitorDev(value, what string) (Chardev, error) {
	if id, ok := strings.CutPrefix(value, "chardev:"); ok {
		if !wellFormedID(id) {
			return Chardev{}, paramError("id", id, errors.New("expects an identifier"))
		}
		return Chardev{ID: id, Backend: "chardev", Fd: -1}, nil
	}
	if value == "stdio" {
		return Chardev{Backend: "stdio", Fd: -1}, nil
	}
	rest, ok := strings.CutPrefix(value, "unix:")
	if !ok {
		return Chardev{}, fmt.Errorf("'%s' is not supported: minivmm's %s", value, what)
	}
	o, err := ParseOpts(rest, "path")
	if err != nil {
		return Chardev{}, err
	}
	o.ID = "" // QEMU drops id= here; the caller names the chardev
	if err := o.Validate(qmpParams); err != nil {
		return Chardev{}, err
	}
	return socketChardev(o)
}

// ParseChardev parses the argument of -chardev; only the socket backend
// exists: "socket,id=ID,path=PATH,server=on,wait=off" or
// "socket,id=ID,fd=N,server=on,wait=off".
func ParseChardev(value string) (Chardev, error) {
	o, err := ParseOpts(value, "backend")
	if err != nil {
		return Chardev{}, err
	}
	backend, hasBackend := o.Get("backend")
	switch backend { // QEMU checks the keys first, but knows those of every backend
	case "socket":
		if err := o.Validate(chardevParams); err != nil {
			return Chardev{}, err
		}
	case "stdio":
		if err := o.Validate(stdioParams); err != nil {
			return Chardev{}, err
		}
	}
	switch {
	case o.ID == "":
		return Chardev{}, errors.New("chardev: no id specified")
	case !hasBackend:
		return Chardev{}, fmt.Errorf("chardev: \"%s\" missing backend", o.ID)
	case backend == "stdio":
		return Chardev{ID: o.ID, Backend: "stdio", Fd: -1}, nil
	case backend != "socket":
		return Chardev{}, fmt.Errorf("chardev backend '%s' is not supported: minivmm has only 'socket' and 'stdio'", backend)
	}
	return socketChardev(o)
}

// socketChardev applies QEMU's socket checks, in QEMU's order, to
// options that Validate accepted.
func socketChardev(o *Opts) (Chardev, error) {
	c := Chardev{ID: o.ID, Backend: "socket", Fd: -1}
	c.Server, _ = o.Bool("server", false)
	c.Wait, _ = o.Bool("wait", true)
	path, hasPath := o.Get("path")
	fd, hasFd := o.Get("fd")
	_, hasWait := o.Get("wait")
	switch {
	case hasPath && hasFd:
		return Chardev{}, errors.New("None or one of 'path', 'fd' or 'host' option required.")
	case !c.Server && hasWait:
		return Chardev{}, errors.New("'wait' option is incompatible with socket in client connect mode")
	case !c.Server:
		return Chardev{}, ErrClientSocket
	case hasFd:
		n, err := strconv.ParseInt(fd, 10, 32)
		if err != nil || n < 0 {
			return Chardev{}, fmt.Errorf("Unable to parse FD number %s", fd)
		}
		c.Fd = int(n)
	case path == "":
		return Chardev{}, errors.New("socket chardev needs path= or fd=")
	}
	c.Path = path
	return c, nil
}
