package monitor

// object-add and object-del: the process's user-creatable objects (TLS
// credentials an NBD server or client names), in the registry the block
// graph holds.

func init() {
	// The arguments are ObjectOptions, a union on qom-type checked by
	// the object registry, which knows each type's properties.
	commands["object-add"] = command{params: []param{req("qom-type", tStr), req("id", tStr)}, run: objectAdd, raw: true}
	commands["object-del"] = command{params: []param{req("id", tStr)}, run: objectDel}
}

func objectAdd(c *call, args Args) (any, error) {
	if err := c.mon.srv.graph.Objects().Add(args, false); err != nil {
		return nil, genericError("%s", err)
	}
	return nil, nil
}

func objectDel(c *call, args Args) (any, error) {
	id, _ := args.Str("id")
	if err := c.mon.srv.graph.Objects().Del(id); err != nil {
		return nil, genericError("%s", err)
	}
	return nil, nil
}
