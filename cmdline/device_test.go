package cmdline

import (
	"strings"
	"testing"
)

func TestParseMem(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		err  string
	}{
		{"256", 256 << 20, ""}, {"size=1G", 1 << 30, ""}, {"2g,slots=2,maxmem=4G", 2 << 30, ""},
		{"0", 128 << 20, ""}, {"64k", 64 << 10, ""}, {"1000B", 4096, ""},
		{"foo", 0, "Parameter 'size' expects a non-negative number below 2^64"},
		{"-5", 0, "Parameter 'size' expects"},
		{"1G,bogus=1", 0, "Invalid parameter"},
	} {
		got, err := ParseMem(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseMem(%q) = %d, %v; want error %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseMem(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestParseDevice(t *testing.T) {
	for _, c := range []struct{ in, err string }{
		{"virtio-blk-pci,drive=d0,id=vd0,num-queues=4,queue-size=128,serial=abc", ""},
		{"virtio-blk,drive=d0,bus=pci.0,addr=0x4,bootindex=1", ""},
		{`{"driver":"virtio-blk-pci","drive":"d0","id":"vd0","num-queues":2}`, ""},
		{"virtio-blk-pci,drive=x,num-queues=x", "Parameter 'num-queues' expects integer"},
		{"virtio-blk-pci,foo=1", "Property 'virtio-blk-pci.foo' not found"},
		{"virtio-blk-pci", "drive property not set"},
		{"virtio-blk-pci,drive=d,queue-size=3", "invalid queue-size property (3), must be a power of 2 (max 1024)"},
		{"virtio-blk-pci,drive=d,queue-size=2", "invalid queue-size property (2), must be > 2"},
		{"virtio-blk-pci,drive=d,num-queues=0", "num-queues property must be larger than 0"},
		{"e1000,id=n0", "'e1000' is not a valid device model name"},
		{"virtio-blk-pci,id=1x,drive=d", "Parameter 'id' expects an identifier"},
		{`{"driver":`, "JSON parse error"},
	} {
		cfg, err := ParseDevice(c.in)
		if c.err == "" {
			if err != nil || cfg.Driver != "virtio-blk-pci" || cfg.Drive == "" {
				t.Errorf("ParseDevice(%q) = %+v, %v", c.in, cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("ParseDevice(%q): %v, want %q", c.in, err, c.err)
		}
	}
}

// FuzzParseDevice: any -device argument gives a config within QEMU's
// limits or an error, never a panic.
func FuzzParseDevice(f *testing.F) {
	for _, s := range []string{"virtio-blk-pci,drive=d0,id=vd0,num-queues=4,queue-size=128", `{"driver":"virtio-blk","drive":"x"}`, "virtio-blk-pci,drive=,,x,share-rw=on"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := ParseDevice(in)
		if err != nil {
			return
		}
		if cfg.Drive == "" || cfg.NumQueues < 1 || cfg.NumQueues > 1024 || cfg.QueueSize < 4 || cfg.QueueSize > 1024 || cfg.QueueSize&(cfg.QueueSize-1) != 0 {
			t.Fatalf("ParseDevice(%q) = %+v", in, cfg)
		}
	})
}

// FuzzParseMem: any -m argument is a page-aligned positive size or an
// error.
func FuzzParseMem(f *testing.F) {
	for _, s := range []string{"256", "size=1G,slots=2,maxmem=4G", "0", "1.5g", "foo", "0x10M"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		n, err := ParseMem(in)
		if err == nil && (n <= 0 || n%4096 != 0) {
			t.Fatalf("ParseMem(%q) = %d", in, n)
		}
	})
}
