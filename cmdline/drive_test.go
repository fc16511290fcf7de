package cmdline

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseDrive(t *testing.T) {
	str := func(s string) *string { return &s }
	base := Drive{File: "/a.img", If: "none", AutoReadOnly: true}
	with := func(f func(*Drive)) Drive { d := base; f(&d); return d }
	for _, tc := range []struct {
		in   string
		want Drive
		err  string // QEMU 7.2's texts, where it has the case
	}{
		{in: "file=/a.img,if=none", want: base},
		{in: "if=none,file=/a.img,format=qcow2,id=d0,node-name=n0", want: with(func(d *Drive) { d.Format, d.ID, d.NodeName = str("qcow2"), "d0", str("n0") })},
		{in: "if=none,file=/a.img,format=", want: with(func(d *Drive) { d.Format = str("") })},
		{in: "if=none,file=/a.img,readonly=on", want: with(func(d *Drive) { d.ReadOnly = true })},
		{in: "if=none,file=/a.img,read-only=on", want: with(func(d *Drive) { d.ReadOnly = true })},
		{in: "if=none,file=/a.img,readonly=on,read-only=on", err: "'read-only' and its alias 'readonly' can't be used at the same time"},
		{in: "if=none,file=/a.img,readonly=maybe", err: "Parameter 'read-only' expects 'on' or 'off'"},
		{in: "if=none,file=/a.img,cache=none", want: with(func(d *Drive) { d.Cache = &DriveCache{Direct: true} })},
		{in: "if=none,file=/a.img,cache=off", want: with(func(d *Drive) { d.Cache = &DriveCache{Direct: true} })},
		{in: "if=none,file=/a.img,cache=unsafe", want: with(func(d *Drive) { d.Cache = &DriveCache{NoFlush: true} })},
		{in: "if=none,file=/a.img,cache=writeback", want: with(func(d *Drive) { d.Cache = &DriveCache{} })},
		{in: "if=none,cache=bogus,readonly=x", err: "invalid cache option"},
		{in: "if=none,file=/a.img,discard=on", want: with(func(d *Drive) { d.Discard = "unmap" })},
		{in: "if=none,file=/a.img,discard=off", want: with(func(d *Drive) { d.Discard = "ignore" })},
		{in: "if=none,file=/a.img,discard=x", err: "Invalid discard option"},
		{in: "if=none,file=/a.img,discard=", err: "Invalid discard option"},
		{in: "if=none,file=/a.img,detect-zeroes=unmap", want: with(func(d *Drive) { d.DetectZeroes = "unmap" })},
		{in: "if=none,file=/a.img,detect-zeroes=x", err: "invalid parameter value: x"},
		{in: "if=none,file=/a.img,aio=native,cache=none", want: with(func(d *Drive) { d.AIO, d.Cache = "native", &DriveCache{Direct: true} })},
		{in: "if=none,file=/a.img,aio=io_uring", want: with(func(d *Drive) { d.AIO = "io_uring" })},
		{in: "if=none,file=/a.img,aio=bogus", err: "invalid aio option"},
		{in: "if=none,file=/a.img,auto-read-only=off", want: with(func(d *Drive) { d.AutoReadOnly = false })},
		{in: "if=none,file=/a.img,file=/b.img", want: with(func(d *Drive) { d.File = "/b.img" })},
		{in: "if=none,file=a,,b", want: with(func(d *Drive) { d.File = "a,b" })},
		{in: "/a.img,if=none", err: "Invalid parameter '/a.img'"}, // no implied key, as in QEMU
		{in: "if=none,file=/a.img,bogus=1", err: "Invalid parameter 'bogus'"},
		{in: "if=none,file=/a.img,id=1", err: "Parameter 'id' expects an identifier"},
		{in: "file=/a.img", err: "minivmm has only virtio-blk devices: use if=virtio, or if=none and attach the drive by its id (-device)"},
		{in: "if=ide,file=/a.img", err: "minivmm has only virtio-blk devices: use if=virtio, or if=none and attach the drive by its id (-device)"},
		{in: "if=none", err: "Parameter 'file' is missing"},
	} {
		got, err := ParseDrive(tc.in)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseDrive(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseDrive(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// TestDriveListed: every key ParseDrive accepts is listed for
// query-command-line-options, but for those QEMU does not list either.
func TestDriveListed(t *testing.T) {
	o, err := LookupOption("drive")
	if err != nil {
		t.Fatal(err)
	}
	listed := o.Params.kinds()
	for key := range driveParams {
		if _, ok := listed[key]; !ok && key != "id" && key != "readonly" && key != "cache" {
			t.Errorf("-drive takes %s, query-command-line-options does not list it", key)
		}
	}
	for _, p := range o.Params {
		if p.Help == "" {
			t.Errorf("%s: QEMU has a help text for every -drive parameter", p.Name)
		}
	}
}

func FuzzParseDrive(f *testing.F) {
	for _, s := range []string{"if=none,file=/a,format=raw", "if=none,file=a,,b,readonly", "if=none,file=/a,cache=none,discard=on,detect-zeroes=unmap", "if=none,file=/a,aio=native,cache=none", "readonly=on,read-only=off", "/a.img"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDrive(s)
		if err != nil {
			return
		}
		if d.If != "none" || d.Discard != "" && d.Discard != "unmap" && d.Discard != "ignore" ||
			d.DetectZeroes != "" && !strings.Contains(" off on unmap ", " "+d.DetectZeroes+" ") {
			t.Fatalf("ParseDrive(%q) = %+v", s, d)
		}
		// What was accepted means the same when written back the way
		// QEMU's users write it.
		o, _ := ParseOpts(s, "")
		if again, err := ParseDrive(o.String()); err != nil || !reflect.DeepEqual(again, d) {
			t.Fatalf("ParseDrive(%q) = %+v, but its rendering %q gives %+v, %v", s, d, o.String(), again, err)
		}
	})
}
