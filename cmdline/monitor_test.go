package cmdline

import "testing"

func TestParseMon(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mon
		err  string // QEMU 7.2's texts where it has the case
	}{
		{in: "chardev=charmonitor,id=monitor,mode=control", want: Mon{ID: "monitor", Chardev: "charmonitor", Mode: "control"}},
		{in: "c,mode=control,pretty=on", want: Mon{Chardev: "c", Mode: "control", Pretty: true}},
		{in: "chardev=c,mode=control,pretty", want: Mon{Chardev: "c", Mode: "control", Pretty: true}},
		{in: "chardev=c", want: Mon{Chardev: "c", Mode: "readline"}},
		{in: "chardev=c,mode=readline", want: Mon{Chardev: "c", Mode: "readline"}},
		{in: "chardev=c,mode=readline,pretty=on", err: "'pretty' is not compatible with HMP monitors"},
		{in: "chardev=c,mode=readline,pretty=off", want: Mon{Chardev: "c", Mode: "readline"}},
		{in: "chardev=c,mode=bogus", err: "Parameter 'mode' does not accept value 'bogus'"},
		{in: "mode=bogus", err: "Parameter 'mode' does not accept value 'bogus'"},
		{in: "mode=control", err: "Parameter 'chardev' is missing"},
		{in: "", err: "Parameter 'chardev' is missing"},
		{in: "chardev=c,mode=control,bogus=1", err: "Invalid parameter 'bogus'"},
		{in: "chardev=c,mode=control,pretty=maybe", err: "Parameter 'pretty' expects 'on' or 'off'"},
		{in: "chardev=c,mode=control,id=1", err: "Parameter 'id' expects an identifier"},
	} {
		got, err := ParseMon(tc.in)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseMon(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("ParseMon(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseMonitor(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Chardev
		err  string
	}{
		{in: "stdio", want: Chardev{Backend: "stdio", Fd: -1}},
		{in: "none", want: Chardev{Backend: "none", Fd: -1}},
		{in: "unix:/x.sock,server=on,wait=off", want: Chardev{Backend: "socket", Path: "/x.sock", Fd: -1, Server: true}},
		{in: "unix:/x.sock,server", want: Chardev{Backend: "socket", Path: "/x.sock", Fd: -1, Server: true, Wait: true}},
		{in: "unix:/x.sock,server=on,bogus=1", err: "Invalid parameter 'bogus'"},
		{in: "chardev:mon0", want: Chardev{ID: "mon0", Backend: "chardev", Fd: -1}},
		{in: "chardev:", err: "Parameter 'id' expects an identifier"},
		{in: "vc", err: "'vc' is not supported: minivmm's -monitor takes stdio, none, unix:PATH,server=on or chardev:ID"},
		{in: "", err: "'' is not supported: minivmm's -monitor takes stdio, none, unix:PATH,server=on or chardev:ID"},
	} {
		got, err := ParseMonitor(tc.in)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseMonitor(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("ParseMonitor(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseMsg(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Msg
		err  string // QEMU 7.2's texts
	}{
		{in: "timestamp=on", want: Msg{Timestamp: true}},
		{in: "timestamp", want: Msg{Timestamp: true}},
		{in: "timestamp=off,guest-name=on", want: Msg{GuestName: true}},
		{in: "", want: Msg{}},
		{in: "timestamp=maybe", err: "Parameter 'timestamp' expects 'on' or 'off'"},
		{in: "bogus=1", err: "Invalid parameter 'bogus'"},
		{in: "id=x", err: "Invalid parameter 'id'"},
	} {
		got, err := ParseMsg(tc.in)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseMsg(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("ParseMsg(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func FuzzParseMonitorOptions(f *testing.F) {
	for _, s := range []string{"stdio", "none", "unix:/x,server=on,wait=off", "chardev=c,mode=readline", "timestamp=on", "guest-name,,x", "id=a,,b", "chardev:c0", "chardev:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, parse := range []func(string) (Chardev, error){ParseMonitor, ParseQmp} {
			c, err := parse(s)
			if err == nil && (c.Backend == "socket" && (c.Path == "" && c.Fd < 0 || !c.Server) ||
				c.Backend == "chardev" && !wellFormedID(c.ID) || c.Backend != "chardev" && c.ID != "") {
				t.Fatalf("parse(%q) = %+v", s, c)
			}
		}
		// An empty chardev name is QEMU's too ("-mon ,"): the lookup fails later.
		if m, err := ParseMon(s); err == nil && m.Mode != "control" && m.Mode != "readline" {
			t.Fatalf("ParseMon(%q) = %+v", s, m)
		}
		ParseMsg(s)
	})
}
