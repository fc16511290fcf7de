// Package nbdclient is the "nbd" protocol driver: a node whose data is an
// NBD export on another server (qemu-storage-daemon, qemu-nbd, another
// minivmm), as QEMU's driver=nbd.
package nbdclient

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// Server is where an export lives: a unix socket path, or host and port.
type Server struct {
	Type       string // "unix" or "inet"
	Path       string
	Host, Port string
}

func (s Server) network() (string, string) {
	if s.Type == "unix" {
		return "unix", s.Path
	}
	return "tcp", net.JoinHostPort(s.Host, s.Port)
}

// IsURL tells whether filename is an NBD URL (nbd://, nbd+unix://,
// nbd+tcp://), which a filename alone opens with this driver.
func IsURL(filename string) bool {
	for _, p := range []string{"nbd://", "nbd+tcp://", "nbd+unix://"} {
		if strings.HasPrefix(filename, p) {
			return true
		}
	}
	return false
}

// ParseURL parses an NBD URL as QEMU's nbd_parse_uri does:
// nbd[+tcp]://host[:port]/export and nbd+unix:///export?socket=path.
func ParseURL(s string) (Server, string, error) {
	u, err := url.Parse(s)
	if err != nil || !IsURL(s) {
		return Server{}, "", fmt.Errorf("invalid URI %s", s)
	}
	export := strings.TrimPrefix(u.Path, "/")
	q := u.Query()
	if u.Scheme == "nbd+unix" {
		sock := q.Get("socket")
		if sock == "" || u.Host != "" || len(q) != 1 {
			return Server{}, "", fmt.Errorf("invalid URI %s", s)
		}
		return Server{Type: "unix", Path: sock}, export, nil
	}
	if len(q) != 0 || u.Hostname() == "" {
		return Server{}, "", fmt.Errorf("invalid URI %s", s)
	}
	port := u.Port()
	if port == "" {
		port = "10809"
	}
	return Server{Type: "inet", Host: u.Hostname(), Port: port}, export, nil
}

// URL is the filename QEMU gives such a node.
func (s Server) URL(export string) string {
	if s.Type == "unix" {
		return fmt.Sprintf("nbd+unix:///%s?socket=%s", export, s.Path)
	}
	return fmt.Sprintf("nbd://%s/%s", net.JoinHostPort(s.Host, s.Port), export)
}
