package cmdline

import (
	"errors"
	"testing"
)

func TestParseQmp(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Chardev
		err  string
	}{
		{in: "unix:/x.sock,server=on,wait=off", want: Chardev{Backend: "socket", Path: "/x.sock", Fd: -1, Server: true}},
		{in: "unix:/x.sock,server,nowait", want: Chardev{Backend: "socket", Path: "/x.sock", Fd: -1, Server: true}},
		{in: "unix:/x.sock,server", want: Chardev{Backend: "socket", Path: "/x.sock", Fd: -1, Server: true, Wait: true}},
		{in: "unix:/x.sock,server=on,wait=on", want: Chardev{Backend: "socket", Path: "/x.sock", Fd: -1, Server: true, Wait: true}},
		{in: "unix:/a,,b.sock,server=on,wait=off", want: Chardev{Backend: "socket", Path: "/a,b.sock", Fd: -1, Server: true}},
		{in: "unix:/a,server=on,wait=off,path=/b", want: Chardev{Backend: "socket", Path: "/b", Fd: -1, Server: true}},
		{in: "unix:/a,id=x,server=on,wait=off", want: Chardev{Backend: "socket", Path: "/a", Fd: -1, Server: true}},
		{in: "unix:/x.sock", err: ErrClientSocket.Error()},
		{in: "unix:/x.sock,server=off", err: ErrClientSocket.Error()},
		{in: "unix:/x.sock,wait=off", err: "'wait' option is incompatible with socket in client connect mode"},
		{in: "unix:/x.sock,server=on,wait=off,bogus=1", err: "Invalid parameter 'bogus'"},
		{in: "unix:/x.sock,server=on,wait=off,pretty=on", err: "Invalid parameter 'pretty'"},
		{in: "unix:/x.sock,server=on,wait=maybe", err: "Parameter 'wait' expects 'on' or 'off'"},
		{in: "unix:/x.sock,fd=3,server=on,wait=off", err: "None or one of 'path', 'fd' or 'host' option required."},
		{in: "unix:,server=on", err: "socket chardev needs path= or fd="},
		{in: "unix:/x,backend=null,server=on", err: "Invalid parameter 'backend'"},
		{in: "tcp:localhost:4444,server=on,wait=off", err: "'tcp:localhost:4444,server=on,wait=off' is not supported: minivmm's -qmp takes unix:PATH,server=on, stdio or chardev:ID"},
		{in: "none", err: "'none' is not supported: minivmm's -qmp takes unix:PATH,server=on, stdio or chardev:ID"},
		{in: "stdio", want: Chardev{Backend: "stdio", Fd: -1}},
		{in: "chardev:c0", want: Chardev{ID: "c0", Backend: "chardev", Fd: -1}},
		// QEMU 7.2's texts: the rest of the string is the id, checked as one.
		{in: "chardev:", err: "Parameter 'id' expects an identifier"},
		{in: "chardev:c0,x=1", err: "Parameter 'id' expects an identifier"},
		{in: "chardev:0c", err: "Parameter 'id' expects an identifier"},
	} {
		got, err := ParseQmp(tc.in)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseQmp(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("ParseQmp(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	if _, err := ParseQmp("unix:/x"); !errors.Is(err, ErrClientSocket) {
		t.Errorf("client socket error %v does not match ErrClientSocket", err)
	}
}

func TestParseChardev(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Chardev
		err  string // QEMU 7.2's texts where it has the case
	}{
		{in: "socket,id=charmonitor,fd=5,server=on,wait=off", want: Chardev{ID: "charmonitor", Backend: "socket", Fd: 5, Server: true}},
		{in: "socket,id=m,path=/x,server=on,wait=off", want: Chardev{ID: "m", Backend: "socket", Path: "/x", Fd: -1, Server: true}},
		{in: "backend=socket,id=m,path=/x,server,nowait", want: Chardev{ID: "m", Backend: "socket", Path: "/x", Fd: -1, Server: true}},
		{in: "socket,id=m,path=/x,server=on", want: Chardev{ID: "m", Backend: "socket", Path: "/x", Fd: -1, Server: true, Wait: true}},
		{in: "socket,path=/x,server=on,wait=off", err: "chardev: no id specified"},
		{in: "socket", err: "chardev: no id specified"},
		{in: "", err: "chardev: no id specified"},
		{in: "id=x", err: `chardev: "x" missing backend`},
		{in: "socket,id=1x,path=/x,server=on", err: "Parameter 'id' expects an identifier"},
		{in: "pty,id=x", err: "chardev backend 'pty' is not supported: minivmm has only 'socket' and 'stdio'"},
		{in: "bogus,id=x,whatever=1", err: "chardev backend 'bogus' is not supported: minivmm has only 'socket' and 'stdio'"},
		{in: "stdio,id=x", want: Chardev{ID: "x", Backend: "stdio", Fd: -1}},
		{in: "stdio,id=x,path=/x", err: "Invalid parameter 'path'"},
		{in: "socket,id=x,path=/x,server=on,wait=off,bogus=1", err: "Invalid parameter 'bogus'"},
		{in: "socket,id=x,path=/x,bogus=1,wait=xx", err: "Invalid parameter 'bogus'"},
		{in: "socket,id=x,path=/x,wait=xx,bogus=1", err: "Parameter 'wait' expects 'on' or 'off'"},
		{in: "socket,id=x,path=/x,fd=3,server=on,wait=off", err: "None or one of 'path', 'fd' or 'host' option required."},
		{in: "socket,id=x,path=/x,fd=3,wait=off", err: "None or one of 'path', 'fd' or 'host' option required."},
		{in: "socket,id=x,path=/x,wait=off", err: "'wait' option is incompatible with socket in client connect mode"},
		{in: "socket,id=x,fd=3,wait=off", err: "'wait' option is incompatible with socket in client connect mode"},
		{in: "socket,id=x,path=/x", err: ErrClientSocket.Error()},
		{in: "socket,id=x,fd=abc,server=on,wait=off", err: "Unable to parse FD number abc"},
		{in: "socket,id=x,fd=0x3,server=on,wait=off", err: "Unable to parse FD number 0x3"},
		{in: "socket,id=x,fd=99999999999,server=on", err: "Unable to parse FD number 99999999999"},
		{in: "socket,id=x,fd=-1,server=on", err: "Unable to parse FD number -1"},
		{in: "socket,id=x,fd=,server=on", err: "Unable to parse FD number "},
		{in: "socket,id=x,server=on", err: "socket chardev needs path= or fd="},
		{in: "socket,id=x,path=,server=on", err: "socket chardev needs path= or fd="},
	} {
		got, err := ParseChardev(tc.in)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseChardev(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("ParseChardev(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
