package cmdline

import (
	"testing"

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
		case tt.err == "" && got != tt.want:
			t.Errorf("ParseExport(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseExport(f *testing.F) {
	f.Add("type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path=/s,writable=on,num-queues=2")
	f.Add("vhost-user-blk,addr.type=fd,addr.str=3,logical-block-size=4k")
	f.Fuzz(func(t *testing.T, s string) {
		// No panic, and what is accepted fits QEMU's types (the
		// export checks the values themselves).
		o, err := ParseExport(s)
		if err == nil && (o.NumQueues < 0 || o.NumQueues > 65535) {
			t.Errorf("ParseExport(%q) accepted num-queues %d", s, o.NumQueues)
		}
	})
}
