package workload

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want func(*Spec)
		err  string
	}{
		{in: "", want: func(*Spec) {}},
		{in: "rw=randrw,bs=4k,iodepth=32,numjobs=2,size=64M,offset=1m,runtime=10,rwmixread=70,verify=on",
			want: func(s *Spec) {
				s.RW, s.BS, s.IODepth, s.NumJobs, s.Size, s.Offset = "randrw", 4096, 32, 2, 64<<20, 1<<20
				s.Runtime, s.RWMixRead, s.Verify = 10*time.Second, 70, true
			}},
		{in: "--rw=readwrite --bs=64KiB --runtime=500ms --rwmixwrite=30 --time_based", want: func(s *Spec) {
			s.RW, s.BS, s.Runtime, s.RWMixRead = "rw", 64<<10, 500*time.Millisecond, 70
		}},
		{in: "verify=crc32c,device=vd0:vd1,device=a", want: func(s *Spec) {
			s.Verify, s.Devices = true, []string{"vd0", "vd1", "a"}
		}},
		{in: "device=a,,b", err: "device ids"},
		{in: "device=vd0:", err: "device ids"},
		{in: "io_size=1g,randseed=7", want: func(s *Spec) { s.IOSize, s.Seed = 1<<30, 7 }},
		{in: "rw=trim", err: "parameter 'rw'"},
		{in: "bs=1000", err: "multiple of 512"},
		{in: "bs=0", err: "multiple of 512"},
		{in: "iodepth=0", err: "iodepth"},
		{in: "iodepth=100000", err: "iodepth"},
		{in: "numjobs=x", err: "numjobs"},
		{in: "rwmixread=101", err: "rwmixread"},
		{in: "size=-1", err: "size"},
		{in: "size=99999999999999999999", err: "size"},
		{in: "runtime=-3s", err: "runtime"},
		{in: "verify=maybe", err: "verify"},
		{in: "speed=fast", err: "unknown parameter 'speed'"},
		{in: "rw", err: "not key=value"},
		{in: "device=", err: "device"},
	} {
		got, err := Parse(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q) = %v, want error containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		want := DefaultSpec()
		c.want(&want)
		if got.String() != want.String() {
			t.Errorf("Parse(%q) = %s, want %s", c.in, got, want)
		}
	}
}

// FuzzParse: any input is a spec or an error; a spec is within the
// limits, and its String parses back to the same spec.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "rw=randrw,bs=4k,iodepth=32,numjobs=4,size=1g,runtime=10s,verify=on",
		"--rw=write --bs=1m", "device=a:c", "rwmixwrite=20,rw=rw", "bs=512,offset=3k,io_size=1t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		if s.BS <= 0 || s.BS%512 != 0 || s.BS > MaxBS || s.IODepth < 1 || s.IODepth > MaxIODepth ||
			s.NumJobs < 1 || s.NumJobs > MaxNumJobs || s.RWMixRead < 0 || s.RWMixRead > 100 ||
			s.Size < 0 || s.Offset < 0 || s.Runtime < 0 || rwModes[s.RW] != s.RW {
			t.Fatalf("Parse(%q) = %+v: out of range", in, s)
		}
		for _, d := range s.Devices {
			if !wellFormedID(d) {
				t.Fatalf("Parse(%q): device name %q", in, d)
			}
		}
		back, err := Parse(s.String())
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not parse: %v", in, s, err)
		}
		if back.String() != s.String() {
			t.Fatalf("round trip of %q: %s, then %s", in, s, back)
		}
	})
}
