package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestNBDOptionErrorsLikeQSD: each bad -nbd-server, and each bad -export
// of type nbd, gets the message qemu-storage-daemon gives.
func TestNBDOptionErrorsLikeQSD(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-storage-daemon")
	dir, blockdevs := exportImages(t)
	sock := filepath.Join(dir, "nbd.sock")
	server := "addr.type=unix,addr.path=" + sock
	for _, tt := range []struct{ server, export string }{
		{server: server + ",tls-creds=t"},
		{server: "addr.type=unix"},
		{server: server + ",max-connections=-1"},
		{server: server + ",max-connections=x"},
		{server: "addr.type=inet,addr.host=127.0.0.1"},
		{server: "addr.type=unix,addr.path=" + dir + "/no/such/x.sock"},
		{server: server + ",bogus=1"},
		{server: "addr.type=inet,addr.host=256.1.1.1,addr.port=1"},
		{server: "addr.type=inet,addr.host=127.0.0.1,addr.port=1,addr.ipv6=on"},
		{server: "addr.type=bogus"},
		{export: "type=nbd,id=e,node-name=d"},
		{server: server, export: "type=nbd,id=e,node-name=zz"},
		{server: server, export: "type=nbd,id=e,node-name=ro,writable=on"},
		{server: server, export: "type=nbd,id=e,node-name=d,bitmaps.0=b"},
		{server: server, export: "type=nbd,id=e,node-name=d,bitmaps=b"},
		{server: server, export: "type=nbd,id=e,node-name=d,allocation-depth=x"},
		{server: server, export: "type=nbd,id=e,node-name=d,description=" + strings.Repeat("x", 4097)},
		{server: server, export: "type=nbd,id=e,node-name=d,addr.type=unix"},
		{server: server, export: "type=nbd,id=e@,node-name=d"},
	} {
		value := tt.export
		if value == "" {
			value = tt.server
		}
		message := func(name, dash string, args ...string) string {
			if tt.server != "" {
				args = append(args, dash+"nbd-server", tt.server)
			}
			if tt.export != "" {
				args = append(args, dash+"export", tt.export)
			}
			return refusal(t, value, value, name, args...)
		}
		qsdArgs, vmmArgs := blockdevArgs(blockdevs)
		want := message("qemu-storage-daemon", "--", qsdArgs...)
		got := message(binary, "-", append([]string{"-machine", "none", "-display", "none"}, vmmArgs...)...)
		if got != want || want == "" {
			t.Errorf("%s:\n  minivmm: %s\n  qsd:     %s", value, got, want)
		}
	}
}
