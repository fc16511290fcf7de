package monitor

// object-add and object-del: the process's user-creatable objects (TLS
// credentials an NBD server or client names), in the registry the block
// graph holds.

func init() {
	// The arguments are ObjectOptions, a union on qom-type checked by
	// the object registry, which knows each type's properties.
	// The schema's enum is QEMU 7.2's ObjectType; the registry builds
	// secret and tls-creds-x509 and refuses the others.
	commands["object-add"] = command{params: []param{req("qom-type", tObjectType), req("id", tStr)}, run: objectAdd, raw: true}
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

var tObjectType = enum("ObjectType", "authz-list", "authz-listfile", "authz-pam", "authz-simple", "can-bus", "can-host-socketcan", "colo-compare", "cryptodev-backend", "cryptodev-backend-builtin", "cryptodev-backend-lkcf", "cryptodev-vhost-user", "dbus-vmstate", "filter-buffer", "filter-dump", "filter-mirror", "filter-redirector", "filter-replay", "filter-rewriter", "input-barrier", "input-linux", "iothread", "main-loop", "memory-backend-epc", "memory-backend-file", "memory-backend-memfd", "memory-backend-ram", "pef-guest", "pr-manager-helper", "qtest", "rng-builtin", "rng-egd", "rng-random", "secret", "secret_keyring", "sev-guest", "thread-context", "s390-pv-guest", "throttle-group", "tls-creds-anon", "tls-creds-psk", "tls-creds-x509", "tls-cipher-suites", "x-remote-object", "x-vfio-user-server")
