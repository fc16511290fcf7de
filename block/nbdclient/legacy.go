package nbdclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"minivmm/block"
)

// ApplyLegacyOptions turns the nbd driver's legacy "host", "port" and
// "path" options (json: filenames and option strings take them; QMP's
// blockdev-add does not) into "server", as QEMU's
// nbd_process_legacy_socket_options does: like QemuOpts, it takes any
// scalar as its string ({"host": -1} is host "-1"), and refuses mixes
// in QEMU's words. opts is changed in place; options without them are
// left as they are.
func ApplyLegacyOptions(opts block.Options) error {
	var path, host, port string
	var hasPath, hasHost, hasPort bool
	for _, k := range []struct {
		key string
		val *string
		has *bool
	}{{"path", &path, &hasPath}, {"host", &host, &hasHost}, {"port", &port, &hasPort}} {
		v, ok := opts[k.key]
		if !ok {
			continue
		}
		s, err := opts.String(k.key, "") // a string, or a keyval's
		if err != nil {
			s, err = scalarString(v)
		}
		if err != nil {
			return fmt.Errorf("Invalid parameter type for '%s', expected: string", k.key)
		}
		*k.val, *k.has = s, true
		delete(opts, k.key)
	}
	if !hasPath && !hasHost && !hasPort {
		return nil
	}
	if _, given := opts["server"]; given {
		return errors.New("Cannot use 'server' and path/host/port at the same time")
	}
	for k := range opts {
		if strings.HasPrefix(k, "server.") {
			return errors.New("Cannot use 'server' and path/host/port at the same time")
		}
	}
	switch {
	case hasPath && hasHost:
		return errors.New("path and host may not be used at the same time")
	case hasPath && hasPort:
		return errors.New("port may not be used without host")
	case hasPath:
		opts["server"] = block.Options{"type": "unix", "path": path}
	case hasHost:
		if !hasPort {
			port = "10809"
		}
		opts["server"] = block.Options{"type": "inet", "host": host, "port": port}
	}
	return nil
}

// scalarString is a scalar option value as QemuOpts holds it: a string.
func scalarString(v any) (string, error) {
	switch v := v.(type) {
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case int:
		return strconv.Itoa(v), nil
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	}
	return "", errors.New("not a scalar")
}

// ExactFilename names the export as QEMU's nbd_refresh_filename does, so
// that a node opened from server options (or the legacy keys) has a URL
// for its filename; with TLS, which no URL says, there is none.
func (m *image) ExactFilename() (string, bool) {
	if m.tlsConf != nil {
		return "", false
	}
	if m.srv.Type == "unix" {
		if m.exportGiven {
			return fmt.Sprintf("nbd+unix:///%s?socket=%s", m.export, m.srv.Path), true
		}
		return "nbd+unix://?socket=" + m.srv.Path, true
	}
	if m.exportGiven {
		return fmt.Sprintf("nbd://%s:%s/%s", m.srv.Host, m.srv.Port, m.export), true
	}
	return fmt.Sprintf("nbd://%s:%s", m.srv.Host, m.srv.Port), true
}

// resolutionError is a host name that did not resolve, in QEMU's words
// (inet_connect_saddr, with getaddrinfo's gai_strerror text).
func resolutionError(srv Server, e *net.DNSError) error {
	msg := e.Err
	switch {
	case e.IsNotFound:
		msg = "Name or service not known"
	case e.IsTemporary:
		msg = "Temporary failure in name resolution"
	}
	return fmt.Errorf("address resolution failed for %s:%s: %s", srv.Host, srv.Port, msg)
}
