package cmdline

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"slices"

	"minivmm/block/export"
	"minivmm/block/export/nbd"
	"minivmm/block/objects"
	"minivmm/vm/vhostuser"
)

// ParseExport parses the argument of -export, qemu-storage-daemon's
// --export: keyval with the implied key "type", checked as QEMU's keyval
// visitor checks BlockExportOptions (members in the schema's order, then
// unexpected ones), with its messages. The types are vhost-user-blk and
// nbd.
func ParseExport(s string) (export.Options, error) {
	m, err := ParseKeyval(s, "type")
	if err != nil {
		return nil, err
	}
	v := &kvVisitor{m: m}
	typ, err := v.str("type", true)
	if err != nil {
		return nil, err
	}
	switch typ {
	case "vhost-user-blk":
		return parseVhostUserExport(v, m)
	case "nbd":
		return parseNBDExport(v)
	case "fuse", "vduse-blk":
		return nil, fmt.Errorf("minivmm has no %s exports", typ)
	default:
		return nil, fmt.Errorf("Parameter 'type' does not accept value '%s'", typ)
	}
}

// parseCommon takes BlockExportOptions' base members.
func parseCommon(v *kvVisitor) (c export.Common, err error) {
	if c.ID, err = v.str("id", true); err != nil {
		return c, err
	}
	if _, err = v.boolean("fixed-iothread"); err != nil {
		return c, err
	}
	if io, err := v.str("iothread", false); err != nil {
		return c, err
	} else if io != "" {
		return c, fmt.Errorf("iothread \"%s\" not found", io)
	}
	if c.NodeName, err = v.str("node-name", true); err != nil {
		return c, err
	}
	if c.Writable, err = v.boolean("writable"); err != nil {
		return c, err
	}
	if c.Writethrough, err = v.boolean("writethrough"); err != nil {
		return c, err
	}
	return c, nil
}

func parseNBDExport(v *kvVisitor) (export.Options, error) {
	c, err := parseCommon(v)
	if err != nil {
		return nil, err
	}
	o := nbd.ExportOptions{ID: c.ID, NodeName: c.NodeName, Writable: c.Writable, Writethrough: c.Writethrough}
	if o.Name, err = v.str("name", false); err != nil {
		return nil, err
	}
	if o.Description, err = v.str("description", false); err != nil {
		return nil, err
	}
	if o.Bitmaps, err = v.bitmapRefs("bitmaps"); err != nil {
		return nil, err
	}
	if o.AllocationDepth, err = v.boolean("allocation-depth"); err != nil {
		return nil, err
	}
	return o, v.done()
}

func parseVhostUserExport(v *kvVisitor, m map[string]any) (export.Options, error) {
	var o vhostuser.ExportOptions
	c, err := parseCommon(v)
	if err != nil {
		return nil, err
	}
	o.ID, o.NodeName, o.Writable, o.Writethrough = c.ID, c.NodeName, c.Writable, c.Writethrough
	addr, err := v.object("addr")
	if err != nil {
		return nil, err
	}
	if o.Path, err = parseUnixAddr(addr); err != nil {
		return nil, err
	}
	if o.LogicalBlockSize, err = v.size("logical-block-size"); err != nil {
		return nil, err
	}
	if _, given := m["logical-block-size"]; !given {
		o.LogicalBlockSize = 512
	}
	nq, err := v.uint("num-queues", math.MaxUint16, "uint16_t")
	if err != nil {
		return nil, err
	}
	o.NumQueues = int(nq)
	if _, given := m["num-queues"]; !given {
		o.NumQueues = 1
	}
	return o, v.done()
}

// parseUnixAddr takes a SocketAddress; minivmm listens on unix sockets.
func parseUnixAddr(a *kvVisitor) (string, error) {
	typ, err := a.str("type", true)
	if err != nil {
		return "", err
	}
	switch typ {
	case "unix":
	case "inet", "vsock":
		return "", errors.New("Only socket address types 'unix' and 'fd' are supported")
	case "fd":
		return "", errors.New("minivmm's vhost-user-blk export listens on a unix socket it creates (addr.type=unix)")
	default:
		return "", fmt.Errorf("Parameter '%s' does not accept value '%s'", a.name("type"), typ)
	}
	path, err := a.str("path", true)
	if err != nil {
		return "", err
	}
	for _, k := range []string{"abstract", "tight"} {
		if b, err := a.boolean(k); err != nil {
			return "", err
		} else if b && k == "abstract" {
			return "", errors.New("minivmm does not listen on abstract unix sockets")
		}
	}
	return path, a.done()
}

// kvVisitor walks a keyval map as QEMU's keyval input visitor does: each
// member taken is ticked off, and done reports the first left over.
type kvVisitor struct {
	m      map[string]any
	prefix string // "addr." inside addr
	seen   []string
}

func (v *kvVisitor) name(k string) string { return v.prefix + k }

func (v *kvVisitor) take(k string, required bool) (any, bool, error) {
	v.seen = append(v.seen, k)
	x, ok := v.m[k]
	if !ok && required {
		return nil, false, fmt.Errorf("Parameter '%s' is missing", v.name(k))
	}
	return x, ok, nil
}

func (v *kvVisitor) str(k string, required bool) (string, error) {
	x, ok, err := v.take(k, required)
	if err != nil || !ok {
		return "", err
	}
	s, isStr := x.(string)
	if !isStr {
		return "", fmt.Errorf("Invalid parameter type for '%s', expected: string", v.name(k))
	}
	return s, nil
}

func (v *kvVisitor) boolean(k string) (bool, error) {
	s, err := v.str(k, false)
	if err != nil || s == "" {
		if _, ok := v.m[k]; ok && err == nil {
			return false, fmt.Errorf("Parameter '%s' %w", v.name(k), ErrBool)
		}
		return false, err
	}
	b, err := ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("Parameter '%s' %w", v.name(k), err)
	}
	return b, nil
}

func (v *kvVisitor) size(k string) (uint64, error) {
	s, err := v.str(k, false)
	if err != nil {
		return 0, err
	}
	if _, ok := v.m[k]; !ok {
		return 0, nil
	}
	n, err := ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("Parameter '%s' expects size", v.name(k))
	}
	return n, nil
}

func (v *kvVisitor) uint(k string, max uint64, typeName string) (uint64, error) {
	s, err := v.str(k, false)
	if err != nil {
		return 0, err
	}
	if _, ok := v.m[k]; !ok {
		return 0, nil
	}
	n, err := ParseUint(s)
	switch {
	case errors.Is(err, ErrNumber):
		return 0, fmt.Errorf("Parameter '%s' expects integer", v.name(k))
	case err != nil || n > max:
		return 0, fmt.Errorf("Parameter '%s' expects %s", v.name(k), typeName)
	}
	return n, nil
}

func (v *kvVisitor) object(k string) (*kvVisitor, error) {
	x, _, err := v.take(k, true)
	if err != nil {
		return nil, err
	}
	m, ok := x.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("Invalid parameter type for '%s', expected: object", v.name(k))
	}
	return &kvVisitor{m: m, prefix: v.name(k) + "."}, nil
}

func (v *kvVisitor) done() error {
	for _, k := range slices.Sorted(maps.Keys(v.m)) {
		if !slices.Contains(v.seen, k) {
			return fmt.Errorf("Parameter '%s' is unexpected", v.name(k))
		}
	}
	return nil
}

// NBDServer is -nbd-server's argument: the server's options, and the
// ids of the objects it names, which [NBDServer.Resolve] looks up.
type NBDServer struct {
	nbd.ServerOptions
	TLSCreds, TLSAuthz string
}

// Resolve looks up the TLS credentials the server names in objs, as
// nbd_server_start does, in its words.
func (o NBDServer) Resolve(objs *objects.Registry) (nbd.ServerOptions, error) {
	so := o.ServerOptions
	if o.TLSCreds != "" {
		c, err := objs.LookupTLSCreds(o.TLSCreds, objects.Server)
		if err != nil {
			return so, err
		}
		so.TLS = c
	}
	if o.TLSAuthz != "" {
		so.TLSAuthz = objs.Authorizer(o.TLSAuthz)
	}
	return so, nil
}

// ParseNBDServer parses the argument of -nbd-server,
// qemu-storage-daemon's --nbd-server: NbdServerOptions as keyval.
func ParseNBDServer(s string) (NBDServer, error) {
	var o NBDServer
	m, err := ParseKeyval(s, "")
	if err != nil {
		return o, err
	}
	v := &kvVisitor{m: m}
	addr, err := v.object("addr")
	if err != nil {
		return o, err
	}
	if o.Network, o.Address, err = parseSocketAddr(addr); err != nil {
		return o, err
	}
	if o.TLSCreds, err = v.str("tls-creds", false); err != nil {
		return o, err
	}
	if o.TLSAuthz, err = v.str("tls-authz", false); err != nil {
		return o, err
	}
	mc, err := v.uint("max-connections", math.MaxUint32, "uint32_t")
	if err != nil {
		return o, err
	}
	o.MaxConnections = uint32(mc)
	if err := v.done(); err != nil {
		return o, err
	}
	return o, nil
}

// parseSocketAddr takes a SocketAddress a server listens on: unix or
// inet, as Go's net package names them.
func parseSocketAddr(a *kvVisitor) (network, address string, err error) {
	typ, err := a.str("type", true)
	if err != nil {
		return "", "", err
	}
	switch typ {
	case "unix":
		path, err := a.str("path", true)
		if err != nil {
			return "", "", err
		}
		for _, k := range []string{"abstract", "tight"} {
			if b, err := a.boolean(k); err != nil {
				return "", "", err
			} else if b && k == "abstract" {
				return "", "", errors.New("minivmm does not listen on abstract unix sockets")
			}
		}
		return "unix", path, a.done()
	case "inet":
		host, err := a.str("host", true)
		if err != nil {
			return "", "", err
		}
		port, err := a.str("port", true)
		if err != nil {
			return "", "", err
		}
		network := "tcp"
		if _, err := a.boolean("numeric"); err != nil {
			return "", "", err
		}
		for _, k := range []string{"ipv4", "ipv6"} {
			if b, err := a.boolean(k); err != nil {
				return "", "", err
			} else if b {
				network = "tcp" + k[3:]
			}
		}
		return network, net.JoinHostPort(host, port), a.done()
	case "vsock", "fd":
		return "", "", fmt.Errorf("minivmm's NBD server listens on unix or inet sockets, not %s", typ)
	}
	// QEMU names the discriminator without its prefix here.
	return "", "", fmt.Errorf("Parameter 'type' does not accept value '%s'", typ)
}
