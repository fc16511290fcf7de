package cmdline

import (
	"reflect"
	"testing"

	"minivmm/block"
	"minivmm/block/export/nbd"
	"minivmm/block/objects"
	"minivmm/vm/vhostuser"
)

func TestParseExport(t *testing.T) {
	base := "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=/s"
	tests := []struct {
		in   string
		want vhostuser.ExportOptions
		err  string
	}{
		{in: base, want: vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: "/s", NumQueues: 1, LogicalBlockSize: 512}},
		{in: "vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=/s,writable=on,writethrough=on,num-queues=4,logical-block-size=4k",
			want: vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: "/s", Writable: true, Writethrough: true, NumQueues: 4, LogicalBlockSize: 4096}},
		{in: base + ",num-queues=0", want: vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: "/s", LogicalBlockSize: 512}},
		{in: base + ",logical-block-size=abc", err: "Parameter 'logical-block-size' expects size"},
		{in: base + ",writable=maybe", err: "Parameter 'writable' expects 'on' or 'off'"},
		{in: base + ",num-queues=x", err: "Parameter 'num-queues' expects integer"},
		{in: base + ",num-queues=70000", err: "Parameter 'num-queues' expects uint16_t"},
		{in: base + ",bogus=1", err: "Parameter 'bogus' is unexpected"},
		{in: base + ",addr.bogus=1", err: "Parameter 'addr.bogus' is unexpected"},
		{in: "type=foo,id=e", err: "Parameter 'type' does not accept value 'foo'"},
		{in: "type=vhost-user-blk,id=e,addr.type=unix,addr.path=/s", err: "Parameter 'node-name' is missing"},
		{in: "type=vhost-user-blk,id=e,node-name=d,addr.path=/s", err: "Parameter 'addr.type' is missing"},
		{in: "type=vhost-user-blk,id=e,node-name=d", err: "Parameter 'addr' is missing"},
		{in: "type=vhost-user-blk,node-name=d,addr.type=unix,addr.path=/s", err: "Parameter 'id' is missing"},
		{in: "type=vhost-user-blk,id=e,node-name=d,addr.type=unix", err: "Parameter 'addr.path' is missing"},
		{in: "type=vhost-user-blk,id=e,node-name=d,addr.type=inet,addr.host=h,addr.port=1", err: "Only socket address types 'unix' and 'fd' are supported"},
		{in: base + ",iothread=io0", err: "iothread \"io0\" not found"},
	}
	for _, tt := range tests {
		got, err := ParseExport(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("ParseExport(%q) error %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("ParseExport(%q): %v", tt.in, err)
		case tt.err == "" && got.(vhostuser.ExportOptions) != tt.want:
			t.Errorf("ParseExport(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseExport(f *testing.F) {
	f.Add("type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=/s,writable=on,num-queues=2")
	f.Add("vhost-user-blk,addr.type=fd,addr.str=3,logical-block-size=4k")
	f.Add("nbd,id=e,node-name=d,name=x,description=y,writable=on,bitmaps.0=b,allocation-depth=on")
	f.Add("nbd,id=e,node-name=d,bitmaps.0.node=n,bitmaps.0.name=b,bitmaps.1=c,bitmaps.2.0=x")
	f.Fuzz(func(t *testing.T, s string) {
		// No panic, and what is accepted fits QEMU's types (the
		// export checks the values themselves).
		x, err := ParseExport(s)
		o, vu := x.(vhostuser.ExportOptions)
		if err == nil && vu && (o.NumQueues < 0 || o.NumQueues > 65535) {
			t.Errorf("ParseExport(%q) accepted num-queues %d", s, o.NumQueues)
		}
	})
}

func TestParseNBDExport(t *testing.T) {
	tests := []struct {
		in   string
		want nbd.ExportOptions
		err  string
	}{
		{in: "type=nbd,id=e,node-name=d", want: nbd.ExportOptions{ID: "e", NodeName: "d"}},
		{in: "nbd,id=e,node-name=d,name=n,description=hello,writable=on,writethrough=on,allocation-depth=on,bitmaps.0=b0,bitmaps.1=b1",
			want: nbd.ExportOptions{ID: "e", NodeName: "d", Name: "n", Description: "hello", Writable: true, Writethrough: true, AllocationDepth: true, Bitmaps: []block.BitmapRef{{Name: "b0"}, {Name: "b1"}}}},
		{in: "nbd,id=e,node-name=d,bitmaps.0.node=q,bitmaps.0.name=b0,bitmaps.1=b1",
			want: nbd.ExportOptions{ID: "e", NodeName: "d", Bitmaps: []block.BitmapRef{{Node: "q", Name: "b0"}, {Name: "b1"}}}},
		{in: "nbd,id=e,node-name=d,bitmaps.0.node=q", err: "Parameter 'bitmaps.0.name' is missing"},
		{in: "nbd,id=e,node-name=d,bitmaps.0.name=b,bitmaps.0.node=q,bitmaps.0.x=1", err: "Parameter 'bitmaps.0.x' is unexpected"},
		{in: "nbd,id=e,node-name=d,bitmaps.0.0=x", err: "Invalid parameter type for 'null', expected: BlockDirtyBitmapOrStr"},
		{in: "nbd,id=e,node-name=d,bitmaps=b", err: "Invalid parameter type for 'bitmaps', expected: array"},
		{in: "nbd,id=e,node-name=d,addr.type=unix", err: "Parameter 'addr' is unexpected"},
		{in: "nbd,id=e", err: "Parameter 'node-name' is missing"},
		{in: "nbd,id=e,node-name=d,allocation-depth=x", err: "Parameter 'allocation-depth' expects 'on' or 'off'"},
	}
	for _, tt := range tests {
		got, err := ParseExport(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("ParseExport(%q) error %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("ParseExport(%q): %v", tt.in, err)
		case tt.err == "" && !reflect.DeepEqual(got, tt.want):
			t.Errorf("ParseExport(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseNBDServer(t *testing.T) {
	tests := []struct {
		in   string
		want NBDServer
		err  string
	}{
		{in: "addr.type=unix,addr.path=/s", want: NBDServer{ServerOptions: nbd.ServerOptions{Network: "unix", Address: "/s"}}},
		{in: "addr.type=inet,addr.host=127.0.0.1,addr.port=10809,max-connections=4", want: NBDServer{ServerOptions: nbd.ServerOptions{Network: "tcp", Address: "127.0.0.1:10809", MaxConnections: 4}}},
		{in: "addr.type=inet,addr.host=::1,addr.port=0", want: NBDServer{ServerOptions: nbd.ServerOptions{Network: "tcp", Address: "[::1]:0"}}},
		{in: "addr.type=unix,addr.path=/s,tls-creds=tls0,tls-authz=a", want: NBDServer{ServerOptions: nbd.ServerOptions{Network: "unix", Address: "/s"}, TLSCreds: "tls0", TLSAuthz: "a"}},
		{in: "addr.type=unix,addr.path=/s,max-connections=-1", err: "Parameter 'max-connections' expects uint32_t"},
		{in: "addr.type=unix", err: "Parameter 'addr.path' is missing"},
		{in: "max-connections=1", err: "Parameter 'addr' is missing"},
		{in: "addr.type=inet,addr.host=h", err: "Parameter 'addr.port' is missing"},
		{in: "addr.type=udp,addr.path=/s", err: "Parameter 'type' does not accept value 'udp'"},
		{in: "addr.type=unix,addr.path=/s,bogus=1", err: "Parameter 'bogus' is unexpected"},
	}
	for _, tt := range tests {
		got, err := ParseNBDServer(tt.in)
		if err == nil && got.TLSCreds != "" {
			// Nothing names credentials in an empty registry.
			if _, rerr := got.Resolve(objects.NewRegistry()); rerr == nil || rerr.Error() != "No TLS credentials with id '"+got.TLSCreds+"'" {
				t.Errorf("Resolve(%q): %v", tt.in, rerr)
			}
		}
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("ParseNBDServer(%q) error %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && err != nil:
			t.Errorf("ParseNBDServer(%q): %v", tt.in, err)
		case tt.err == "" && !reflect.DeepEqual(got, tt.want):
			t.Errorf("ParseNBDServer(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseNBDServer(f *testing.F) {
	f.Add("addr.type=inet,addr.host=localhost,addr.port=10809,max-connections=2")
	f.Add("addr.type=unix,addr.path=/s,tls-creds=x")
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseNBDServer(s)
		if err == nil && o.Network != "unix" && o.Network != "tcp" {
			t.Errorf("ParseNBDServer(%q) accepted network %q", s, o.Network)
		}
	})
}
