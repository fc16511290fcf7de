package monitor

// Which commands may run out of band is the command table's allowOOB
// (see allowOOB). QEMU 7.2 allows it for migrate-recover, migrate-pause,
// yank and query-yank, none of which minivmm has: every exec-oob is
// answered with QEMU's "does not support OOB" error, at once, ahead of
// in-band work still queued. A command marked so must never block (no
// block-layer IO, no lock an in-band command may hold long).

// isOOB reports whether a decoded message asks for out-of-band execution,
// as QEMU's qmp_is_oob decides: "exec-oob" and no "execute". Such a
// message from a client that has not enabled oob is in-band, and rejected
// there ("QMP input member 'exec-oob' is unexpected").
func isOOB(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	_, oob := m["exec-oob"]
	_, exec := m["execute"]
	return oob && !exec
}

// qmpCapabilities is qmp_capabilities: it ends negotiation, enabling the
// capabilities the client asks for. The greeting offers "oob" only.
func qmpCapabilities(c *call, args Args) (any, error) {
	if c.negotiated.Load() {
		return nil, &Error{Class: CommandNotFound, Desc: "Capabilities negotiation is already complete, command ignored"}
	}
	caps, _ := args["enable"].([]string)
	for _, cap := range caps {
		if cap != "oob" {
			// QEMU visits list elements without a name and prints it as 'null'.
			return nil, genericError("Parameter 'null' does not accept value '%s'", cap)
		}
	}
	if len(caps) > 0 {
		c.oob.Store(true)
	}
	c.negotiated.Store(true)
	return nil, nil
}
