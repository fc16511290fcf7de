package monitor

import (
	"encoding/json"
	"math"
	"net"
	"strconv"

	"minivmm/block/export"
	"minivmm/block/export/nbd"
	"minivmm/block/objects"
	"minivmm/vm/vhostuser"
)

// The block export commands (qapi/block-export.json), for the export
// types minivmm has, vhost-user-blk and nbd, and the NBD server's.
var (
	tBlockExportType = enum("BlockExportType", "nbd", "vhost-user-blk", "fuse", "vduse-blk")
	tSocketAddress   = func() *qtype {
		t := object("SocketAddress", req("type", enum("SocketAddressType", "inet", "unix", "vsock", "fd")))
		t.tag = "type"
		t.variants = []variant{
			{"inet", object("InetSocketAddressWrapper", req("host", tStr), req("port", tStr))},
			{"unix", object("UnixSocketAddress", req("path", tStr), opt("abstract", tBool), opt("tight", tBool))},
			{"vsock", object("VsockSocketAddress", req("cid", tStr), req("port", tStr))},
			{"fd", object("String", req("str", tStr))},
		}
		return t
	}()
	// block-export-add's arguments: BlockExportOptions, a union on type
	// whose one variant minivmm has is vhost-user-blk (an export of
	// another type gets QEMU's refusal from the handler).
	tBlockExportOptions = func() *qtype {
		t := object("BlockExportOptions",
			req("type", tBlockExportType), req("id", tStr), opt("fixed-iothread", tBool), opt("iothread", tStr),
			req("node-name", tStr), opt("writable", tBool), opt("writethrough", tBool))
		t.tag = "type"
		t.variants = []variant{
			{"nbd", object("BlockExportOptionsNbd",
				opt("name", tStr), opt("description", tStr),
				opt("bitmaps", arrayOf(tBlockDirtyBitmapOrStr)), opt("allocation-depth", tBool))},
			{"vhost-user-blk", object("BlockExportOptionsVhostUserBlk",
				// size and uint16: checked by uintArg, with QEMU's words
				// for the unsigned types this schema has no builtin for.
				req("addr", tSocketAddress), opt("logical-block-size", tAny), opt("num-queues", tAny))},
		}
		return t
	}()
	tSocketAddressLegacy = func() *qtype {
		t := object("SocketAddressLegacy", req("type", enum("SocketAddressType", "inet", "unix", "vsock", "fd")))
		t.tag = "type"
		t.variants = []variant{
			{"inet", object("InetSocketAddressWrapper", req("data", object("InetSocketAddress", req("host", tStr), req("port", tStr))))},
			{"unix", object("UnixSocketAddressWrapper", req("data", object("UnixSocketAddress", req("path", tStr), opt("abstract", tBool), opt("tight", tBool))))},
			{"vsock", object("VsockSocketAddressWrapper", req("data", object("VsockSocketAddress", req("cid", tStr), req("port", tStr))))},
			{"fd", object("StringWrapper", req("data", object("String", req("str", tStr))))},
		}
		return t
	}()
	// max-connections is a uint32: an int in the schema, its range checked by uintArg.
	tNbdServerStart = object("q_obj_nbd-server-start-arg",
		req("addr", tSocketAddressLegacy), opt("tls-creds", tStr), opt("tls-authz", tStr), opt("max-connections", tInt))
	tNbdServerAddOptions = object("NbdServerAddOptions",
		opt("name", tStr), opt("description", tStr), req("device", tStr), opt("writable", tBool), opt("bitmap", tStr))
	tBlockExportRemoveMode = enum("BlockExportRemoveMode", "safe", "hard")
	tBlockExportInfo       = object("BlockExportInfo",
		req("id", tStr), req("type", tBlockExportType), req("node-name", tStr), req("shutting-down", tBool))
	tBlockExportDeleted = object("q_obj_BLOCK_EXPORT_DELETED-arg", req("id", tStr))
)

// SetExports gives the monitor the VMM's exports (those of the command
// line among them) and its NBD server, and makes an export's removal an
// event.
func (s *Server) SetExports(x *export.Table, n *nbd.Service) {
	s.mu.Lock()
	s.exports = x
	s.nbd = n
	s.mu.Unlock()
	x.OnDeleted(func(id string) { s.Emit("BLOCK_EXPORT_DELETED", Obj{{"id", id}}) })
}

func (s *Server) nbdService() (*nbd.Service, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nbd == nil {
		return nil, genericError("the NBD server is not available in this monitor")
	}
	return s.nbd, nil
}

func (s *Server) exportTable() (*export.Table, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exports == nil {
		return nil, genericError("block exports are not available in this monitor")
	}
	return s.exports, nil
}

func blockExportAdd(c *call, args Args) (any, error) {
	x, err := c.mon.srv.exportTable()
	if err != nil {
		return nil, err
	}
	switch typ, _ := args.Str("type"); typ {
	case "nbd":
		o := nbd.ExportOptions{}
		o.ID, _ = args.Str("id")
		o.NodeName, _ = args.Str("node-name")
		o.Writable, _ = args["writable"].(bool)
		o.Writethrough, _ = args["writethrough"].(bool)
		if io, ok := args.Str("iothread"); ok {
			return nil, genericError("iothread \"%s\" not found", io)
		}
		o.Name, _ = args.Str("name")
		o.Description, _ = args.Str("description")
		o.AllocationDepth, _ = args["allocation-depth"].(bool)
		o.Bitmaps = bitmapRefs(args["bitmaps"])
		return noReturn(x.Add(o))
	case "fuse", "vduse-blk":
		return nil, genericError("minivmm has no %s exports", typ)
	}
	o := vhostuser.ExportOptions{NumQueues: 1, LogicalBlockSize: 512}
	o.ID, _ = args.Str("id")
	o.NodeName, _ = args.Str("node-name")
	o.Writable, _ = args["writable"].(bool)
	o.Writethrough, _ = args["writethrough"].(bool)
	if io, ok := args.Str("iothread"); ok {
		return nil, genericError("iothread \"%s\" not found", io)
	}
	if n, ok, err := uintArg(args, "logical-block-size"); err != nil {
		return nil, err
	} else if ok {
		o.LogicalBlockSize = n
	}
	if n, ok, err := uintArg(args, "num-queues"); err != nil {
		return nil, err
	} else if ok {
		if n > math.MaxUint16 {
			return nil, genericError("Parameter 'num-queues' expects uint16_t")
		}
		o.NumQueues = int(n)
	}
	addr := args["addr"].(map[string]any)
	switch addr["type"] {
	case "unix":
		if abstract, _ := addr["abstract"].(bool); abstract {
			return nil, genericError("minivmm does not listen on abstract unix sockets")
		}
		o.Path = addr["path"].(string)
	case "fd":
		return nil, genericError("minivmm's vhost-user-blk export listens on a unix socket it creates (addr.type=unix)")
	default:
		return nil, genericError("Only socket address types 'unix' and 'fd' are supported")
	}
	return noReturn(x.Add(o))
}

// noReturn is the reply of a command that returns nothing: err, if any,
// as a GenericError in its own words.
func noReturn(err error) (any, error) {
	if err != nil {
		return nil, genericError("%s", err.Error())
	}
	return nil, nil
}

func blockExportDel(c *call, args Args) (any, error) {
	x, err := c.mon.srv.exportTable()
	if err != nil {
		return nil, err
	}
	id, _ := args.Str("id")
	mode, _ := args.Str("mode")
	return noReturn(x.Delete(id, mode == "hard"))
}

func queryBlockExports(c *call, _ Args) (any, error) {
	x, err := c.mon.srv.exportTable()
	if err != nil {
		return []any{}, nil
	}
	out := []any{}
	for _, e := range x.List() {
		out = append(out, Obj{{"id", e.ID}, {"type", e.Type}, {"node-name", e.NodeName}, {"shutting-down", e.ShuttingDown}})
	}
	return out, nil
}

// uintArg is an unsigned integer argument as QEMU's input visitor takes
// it: a JSON integer, a negative one wrapping around as in C.
func uintArg(args Args, name string) (uint64, bool, error) {
	v, ok := args[name]
	if !ok {
		return 0, false, nil
	}
	if i, isInt := v.(int64); isInt { // checked as the schema's int
		return uint64(i), true, nil // a negative one is out of any uint range, as in QEMU
	}
	if n, isNum := v.(json.Number); isNum {
		if u, err := strconv.ParseUint(string(n), 10, 64); err == nil {
			return u, true, nil
		}
		if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
			return uint64(i), true, nil
		}
	}
	return 0, false, genericError("Parameter '%s' expects uint64", name)
}

func nbdServerStart(c *call, args Args) (any, error) {
	n, err := c.mon.srv.nbdService()
	if err != nil {
		return nil, err
	}
	var o nbd.ServerOptions
	addr := args["addr"].(map[string]any)
	data, _ := addr["data"].(map[string]any)
	switch addr["type"] {
	case "unix":
		if abstract, _ := data["abstract"].(bool); abstract {
			return nil, genericError("minivmm does not listen on abstract unix sockets")
		}
		o.Network, o.Address = "unix", data["path"].(string)
	case "inet":
		o.Network, o.Address = "tcp", net.JoinHostPort(data["host"].(string), data["port"].(string))
	default:
		return nil, genericError("minivmm's NBD server listens on unix or inet sockets, not %s", addr["type"])
	}
	if m, ok, err := uintArg(args, "max-connections"); err != nil {
		return nil, err
	} else if ok {
		if m > math.MaxUint32 {
			return nil, genericError("Parameter 'max-connections' expects uint32_t")
		}
		o.MaxConnections = uint32(m)
	}
	if creds, ok := args.Str("tls-creds"); ok {
		c, err := c.mon.srv.graph.Objects().LookupTLSCreds(creds, objects.Server)
		if err != nil {
			return nil, genericError("%s", err)
		}
		o.TLS = c
	}
	if authz, ok := args.Str("tls-authz"); ok {
		// Looked up at each client, as QEMU does.
		o.TLSAuthz = c.mon.srv.graph.Objects().Authorizer(authz)
	}
	return noReturn(n.Start(o))
}

func nbdServerStop(c *call, _ Args) (any, error) {
	n, err := c.mon.srv.nbdService()
	if err != nil {
		return nil, err
	}
	return noReturn(n.Stop())
}

// nbdServerAdd is the deprecated nbd-server-add: a block-export-add of
// type nbd whose id is the export name. nbd-server-remove, its other
// half, removes NBD exports whether or not the server runs, as QEMU's.
func nbdServerAdd(c *call, args Args) (any, error) {
	x, err := c.mon.srv.exportTable()
	if err != nil {
		return nil, err
	}
	n, err := c.mon.srv.nbdService()
	if err != nil {
		return nil, err
	}
	if !n.Running() {
		return nil, genericError("NBD server not running")
	}
	o := nbd.ExportOptions{}
	o.NodeName, _ = args.Str("device")
	o.Name, _ = args.Str("name")
	if o.Name == "" {
		o.Name = o.NodeName
	}
	o.ID = o.Name
	o.Description, _ = args.Str("description")
	o.Writable, _ = args["writable"].(bool)
	if b, ok := args.Str("bitmap"); ok {
		o.Bitmaps = bitmapRefs([]any{b})
	}
	// The legacy command exports a read-only node read-only, whatever
	// writable says (qmp_nbd_server_add).
	if node, ok := c.mon.srv.graph.Node(o.NodeName); ok && node.ReadOnly() {
		o.Writable = false
	}
	return noReturn(x.Add(o))
}

func nbdServerRemove(c *call, args Args) (any, error) {
	x, err := c.mon.srv.exportTable()
	if err != nil {
		return nil, err
	}
	name, _ := args.Str("name")
	mode, _ := args.Str("mode")
	return noReturn(x.DeleteIf(name, nbd.ExportType, mode == "hard"))
}
