package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/internal/qmptest"
	"minivmm/internal/tlstest"
)

// tlsDirs are credentials dirs from one CA: a server's, a client's, a
// client's without a certificate, and a client's whose certificate
// another CA signed.
type tlsDirs struct{ srv, cli, nocert, wrongca, expired string }

func makeTLSDirs(t *testing.T, dir string) tlsDirs {
	t.Helper()
	ca, other := tlstest.NewCA(t, "Test CA"), tlstest.NewCA(t, "Other CA")
	cert, key, _ := other.Issue(t, tlstest.Client())
	old := tlstest.Client()
	old.NotBefore, old.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	return tlsDirs{
		expired: ca.ClientDir(t, filepath.Join(dir, "expired"), old),
		srv:     ca.ServerDir(t, filepath.Join(dir, "srv"), tlstest.Server()),
		cli:     ca.ClientDir(t, filepath.Join(dir, "cli"), tlstest.Client()),
		nocert:  tlstest.WriteDir(t, filepath.Join(dir, "nocert"), map[string][]byte{"ca-cert.pem": ca.PEM()}),
		wrongca: tlstest.WriteDir(t, filepath.Join(dir, "wrongca"), map[string][]byte{
			"ca-cert.pem": ca.PEM(), "client-cert.pem": cert, "client-key.pem": key}),
	}
}

// tlsServer starts kind (minivmm, qemu-storage-daemon, qemu-nbd) serving
// the raw img as the writable export "disk" on a unix socket, with TLS
// credentials srvDir (none if ""); it returns the socket and the pid.
func tlsServer(t *testing.T, kind, dir, img, srvDir string) (string, int) {
	return tlsAuthzServer(t, kind, dir, img, srvDir, "")
}

// tlsAuthzServer is tlsServer with tls-authz naming an authz-simple
// object that allows identity ("": no tls-authz).
func tlsAuthzServer(t *testing.T, kind, dir, img, srvDir, identity string) (string, int) {
	t.Helper()
	sock := filepath.Join(dir, kind+".sock")
	pidfile := filepath.Join(dir, kind+".pid")
	obj, creds := []string{}, ""
	if srvDir != "" {
		obj, creds = []string{"-object", "tls-creds-x509,id=tls0,dir=" + srvDir + ",endpoint=server"}, ",tls-creds=tls0"
	}
	if identity != "" {
		obj, creds = append(obj, "-object", "authz-simple,id=az0,identity="+strings.ReplaceAll(identity, ",", ",,")), creds+",tls-authz=az0"
	}
	var p *qmptest.Process
	switch kind {
	case "minivmm":
		p = startVMM(t, nil, append(obj, "-blockdev", "driver=file,node-name=f,filename="+img,
			"-nbd-server", "addr.type=unix,addr.path="+sock+creds, "-export", "type=nbd,id=e,node-name=f,name=disk,writable=on", "-pidfile", pidfile)...)
	case "qemu-storage-daemon":
		for i := range obj {
			if obj[i] == "-object" {
				obj[i] = "--object"
			}
		}
		p = qmptest.StartArgs(t, kind, nil, append(obj, "--blockdev", "driver=file,node-name=f,filename="+img,
			"--nbd-server", "addr.type=unix,addr.path="+sock+creds, "--export", "type=nbd,id=e,node-name=f,name=disk,writable=on", "--pidfile", pidfile)...)
	case "qemu-nbd":
		args := []string{"-f", "raw", "-k", sock, "-x", "disk", "--shared=8", "--persistent", "--pid-file", pidfile, img}
		if srvDir != "" {
			args = append([]string{"--object", obj[1], "--tls-creds", "tls0"}, args...)
		}
		p = qmptest.StartArgs(t, kind, nil, args...)
	}
	for i := 0; ; i++ {
		if _, err := os.Stat(pidfile); err == nil {
			break
		}
		if i > 1000 {
			t.Fatalf("%s did not start: %s", kind, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return sock, p.Pid
}

// tlsOpts are qemu-img/qemu-io arguments opening the export over TLS
// with the client credentials cliDir.
func tlsOpts(cliDir, objExtra, sock, extra string) []string {
	return []string{"--object", "tls-creds-x509,id=tls0,dir=" + cliDir + ",endpoint=client" + objExtra,
		"--image-opts", "driver=nbd,server.type=unix,server.path=" + sock + ",export=disk,tls-creds=tls0" + extra}
}

// attempt runs a tool and returns its output (the socket path made
// @SOCK@) and whether it succeeded.
func attempt(name, sock string, args ...string) (string, bool) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return strings.ReplaceAll(strings.TrimSpace(string(out)), sock, "@SOCK@"), err == nil
}

// TestNBDTLSLikeQSD: qemu-img, qemu-io, qemu-nbd and nbdinfo against
// minivmm's TLS export and qemu-storage-daemon's, same credentials: what
// one serves the other serves, what one refuses (no TLS, wrong hostname,
// no client certificate, a foreign one) the other refuses, in the words
// the clients print; minivmm's fds are back to their count after each.
func TestNBDTLSLikeQSD(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-io", "qemu-nbd", "qemu-storage-daemon", "nbdinfo")
	type run struct {
		what      string
		tool      string
		args      func(sock string) []string
		ok        bool
		sameWords bool // the clients print the same error for both servers
	}
	dir := t.TempDir()
	d := makeTLSDirs(t, dir)
	runs := []run{
		{"no TLS", "qemu-img", func(s string) []string { return []string{"info", "nbd+unix:///disk?socket=" + s} }, false, true},
		{"no TLS, list", "qemu-nbd", func(s string) []string { return []string{"-L", "-k", s} }, false, true},
		{"TLS", "qemu-img", func(s string) []string {
			return append([]string{"info"}, tlsOpts(d.cli, "", s, ",tls-hostname=localhost")...)
		}, true, true},
		{"TLS, wrong hostname", "qemu-img", func(s string) []string {
			return append([]string{"info"}, tlsOpts(d.cli, "", s, ",tls-hostname=foo")...)
		}, false, true},
		{"TLS, no hostname", "qemu-img", func(s string) []string { return append([]string{"info"}, tlsOpts(d.cli, "", s, "")...) }, false, true},
		{"TLS, client without a certificate", "qemu-img", func(s string) []string {
			return append([]string{"info"}, tlsOpts(d.nocert, "", s, ",tls-hostname=localhost")...)
		}, false, false},
		{"TLS, client certificate from another CA", "qemu-img", func(s string) []string {
			return append([]string{"info"}, tlsOpts(d.wrongca, ",sanity-check=off", s, ",tls-hostname=localhost")...)
		}, false, false},
		{"TLS, expired client certificate", "qemu-img", func(s string) []string {
			return append([]string{"info"}, tlsOpts(d.expired, ",sanity-check=off", s, ",tls-hostname=localhost")...)
		}, false, false},
		{"TLS, qemu-io", "qemu-io", func(s string) []string {
			return append(tlsOpts(d.cli, "", s, ",tls-hostname=localhost"), "-c", "write -q -P 0x5a 0 64k", "-c", "read -q -P 0x5a 0 64k")
		}, true, true},
		{"TLS, nbdinfo", "nbdinfo", func(s string) []string {
			return []string{"--size", "nbds+unix:///disk?socket=" + s + "&tls-certificates=" + d.cli}
		}, true, true},
		{"TLS, nbdinfo --list", "nbdinfo", func(s string) []string {
			return []string{"--list", "--json", "nbds+unix:///?socket=" + s + "&tls-certificates=" + d.cli}
		}, true, true},
	}
	results := map[string][]string{}
	for _, kind := range []string{"qemu-storage-daemon", "minivmm"} {
		img := filepath.Join(dir, kind+".raw")
		if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		sock, pid := tlsServer(t, kind, dir, img, d.srv)
		base := steadyFds(t, pid)
		for _, r := range runs {
			out, ok := attempt(r.tool, sock, r.args(sock)...)
			if ok != r.ok {
				t.Errorf("%s against %s: success %v, want %v:\n%s", r.what, kind, ok, r.ok, out)
			}
			results[kind] = append(results[kind], out)
			if kind == "minivmm" {
				settledFds(t, pid, base, r.what)
			}
		}
	}
	for i, r := range runs {
		got, want := results["minivmm"][i], results["qemu-storage-daemon"][i]
		if r.sameWords && got != want {
			t.Errorf("%s:\n  against minivmm: %s\n  against qsd:     %s", r.what, got, want)
		}
		t.Logf("%s:\n  against minivmm: %s\n  against qsd:     %s", r.what, got, want)
	}
}

// TestNBDTLSClient: minivmm's nbd driver (img, io, -blockdev, and
// blockdev-add after object-add) reads and writes the TLS exports of
// qemu-nbd, qemu-storage-daemon and minivmm; its refusals are
// qemu-img's, word for word.
func TestNBDTLSClient(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-nbd", "qemu-storage-daemon")
	dir := t.TempDir()
	d := makeTLSDirs(t, dir)
	for _, kind := range []string{"qemu-nbd", "qemu-storage-daemon", "minivmm"} {
		t.Run(kind, func(t *testing.T) {
			img := filepath.Join(dir, kind+".raw")
			if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			sock, _ := tlsServer(t, kind, dir, img, d.srv)
			tls := func(extra string) []string { return tlsOpts(d.cli, "", sock, extra) }
			out, ok := attempt(binary, sock, append([]string{"io"}, append(tls(",tls-hostname=localhost"),
				"-c", "write -P 0x77 4k 8k", "-c", "read -P 0x77 4k 8k", "-c", "read -P 0 0 4k")...)...)
			if !ok || strings.Contains(out, "fail") {
				t.Errorf("minivmm io over TLS:\n%s", out)
			}
			if out, ok := attempt("qemu-io", sock, append(tls(",tls-hostname=localhost"), "-c", "read -P 0x77 4k 8k")...); !ok || strings.Contains(out, "fail") {
				t.Errorf("qemu-io reading what minivmm wrote:\n%s", out)
			}
			for i, args := range [][]string{
				tls(",tls-hostname=localhost"),
				tls(",tls-hostname=foo"),
				tls(""),
				{"nbd+unix:///disk?socket=" + sock},
				// Refused by the server once the handshake is done: the
				// words depend on the TLS stacks, not compared.
				tlsOpts(d.nocert, "", sock, ",tls-hostname=localhost"),
			} {
				want, wantOK := attempt("qemu-img", sock, append([]string{"info"}, args...)...)
				got, gotOK := attempt(binary, sock, append([]string{"img", "info"}, args...)...)
				got = strings.ReplaceAll(got, "minivmm img: ", "qemu-img: ")
				if gotOK != wantOK || (!wantOK && got != want && i < 4) {
					t.Errorf("img info %q:\n  minivmm:  %s\n  qemu-img: %s", args, got, want)
				}
			}
			// In a VMM: -object and -blockdev, then object-add and
			// blockdev-add.
			p := startVMM(t, nil, "-object", "tls-creds-x509,id=c0,dir="+d.cli+",endpoint=client",
				"-blockdev", "driver=nbd,node-name=n0,server.type=unix,server.path="+sock+",export=disk,tls-creds=c0,tls-hostname=localhost")
			c := qmptest.Dial(t, p.Sock)
			c.Negotiate()
			for _, step := range []struct {
				cmd  string
				args map[string]any
				err  string
			}{
				{"object-add", map[string]any{"qom-type": "tls-creds-x509", "id": "c1", "dir": d.cli, "endpoint": "client"}, ""},
				{"blockdev-add", map[string]any{"driver": "nbd", "node-name": "n1", "export": "disk", "tls-creds": "c1", "tls-hostname": "localhost",
					"server": map[string]any{"type": "unix", "path": sock}}, ""},
				{"blockdev-add", map[string]any{"driver": "nbd", "node-name": "n2", "export": "disk", "tls-creds": "c1", "tls-hostname": "nothere",
					"server": map[string]any{"type": "unix", "path": sock}}, "Certificate does not match the hostname nothere"},
				{"blockdev-add", map[string]any{"driver": "nbd", "node-name": "n2", "export": "disk", "tls-creds": "c9",
					"server": map[string]any{"type": "unix", "path": sock}}, "No TLS credentials with id 'c9'"},
				{"blockdev-add", map[string]any{"driver": "nbd", "node-name": "n2", "export": "disk",
					"server": map[string]any{"type": "unix", "path": sock}}, "TLS negotiation required before option 7 (go)"},
			} {
				r := c.Execute(step.cmd, step.args)
				e, _ := r["error"].(map[string]any)
				switch {
				case step.err == "" && e != nil:
					t.Errorf("%s %v: %v", step.cmd, step.args, e)
				case step.err != "" && (e == nil || !strings.HasPrefix(e["desc"].(string), step.err)):
					t.Errorf("%s %v: %v, want %q", step.cmd, step.args, r, step.err)
				}
			}
			c.Execute("quit", nil)
			c.WaitClosed(10 * time.Second)
		})
	}
	// With TLS against a server without it: refused as qemu-img refuses.
	img := filepath.Join(dir, "plain.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	sock, _ := tlsServer(t, "qemu-nbd", t.TempDir(), img, "")
	args := tlsOpts(d.cli, "", sock, ",tls-hostname=localhost")
	want, _ := attempt("qemu-img", sock, append([]string{"info"}, args...)...)
	got, _ := attempt(binary, sock, append([]string{"img", "info"}, args...)...)
	if got = strings.ReplaceAll(got, "minivmm img: ", "qemu-img: "); got != want {
		t.Errorf("TLS against a plain server:\n  minivmm:  %s\n  qemu-img: %s", got, want)
	}
}

// TestObjectQMPLikeQEMU plays object-add, object-del and nbd-server-start
// with tls-creds on qemu-system-x86_64 and on minivmm: the replies agree.
func TestObjectQMPLikeQEMU(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := makeTLSDirs(t, dir)
	x509 := func(id, dir, endpoint string, extra ...any) map[string]any {
		a := map[string]any{"qom-type": "tls-creds-x509", "id": id, "dir": dir, "endpoint": endpoint}
		for i := 0; i < len(extra); i += 2 {
			a[extra[i].(string)] = extra[i+1]
		}
		return a
	}
	srvAddr := func(name string) map[string]any {
		return map[string]any{"type": "unix", "data": map[string]any{"path": filepath.Join(dir, name)}}
	}
	script := []struct {
		cmd  string
		args map[string]any
	}{
		{"object-add", x509("s0", d.srv, "server")},
		{"object-add", x509("s0", d.srv, "server")},
		{"object-add", x509("c0", d.cli, "client")},
		{"object-add", x509("c1", d.srv, "client", "verify-peer", false, "sanity-check", true)},
		{"object-add", x509("x", d.cli, "server")},
		{"object-add", x509("x", "/nonexistent", "client")},
		{"object-add", x509("x", d.srv, "server", "verify-peer", "yes")},
		{"object-add", x509("x", d.srv, "server", "endpoint", "both")},
		{"object-add", x509("x", d.srv, "server", "loaded", true)},
		{"object-add", x509("x", d.srv, "server", "bogus", 1)},
		{"object-add", x509("1x", d.srv, "server")},
		{"object-add", map[string]any{"qom-type": "tls-creds-x509", "endpoint": "client"}},
		{"object-add", map[string]any{"id": "x"}},
		{"object-add", map[string]any{"qom-type": "no-such-type", "id": "x"}},
		{"object-add", map[string]any{"qom-type": "tls-creds-x509", "id": "x", "endpoint": "client"}},
		{"object-add", map[string]any{"qom-type": "secret", "id": "sec", "data": "abc"}},
		{"object-add", map[string]any{"qom-type": "secret", "id": "sec2"}},
		{"object-add", map[string]any{"qom-type": "authz-simple", "id": "az", "identity": "CN=client"}},
		{"object-add", map[string]any{"qom-type": "authz-simple", "id": "az2"}},
		{"object-add", map[string]any{"qom-type": "authz-simple", "id": "az2", "identity": 5}},
		{"nbd-server-start", map[string]any{"addr": srvAddr("n.sock"), "tls-creds": "c0"}},
		{"nbd-server-start", map[string]any{"addr": srvAddr("n.sock"), "tls-creds": "sec"}},
		{"nbd-server-start", map[string]any{"addr": srvAddr("n.sock"), "tls-creds": "nope"}},
		{"nbd-server-start", map[string]any{"addr": srvAddr("n.sock"), "tls-creds": "s0", "tls-authz": "az"}},
		{"object-del", map[string]any{"id": "s0"}}, // in use: QEMU's server keeps its reference
		{"object-del", map[string]any{"id": "s0"}},
		{"nbd-server-stop", nil},
		{"object-del", map[string]any{"id": "sec"}},
		{"object-del", map[string]any{"id": "c0"}},
		{"object-del", map[string]any{"id": "az"}},
		{"object-del", map[string]any{}},
	}
	play := func(sockPath string) []string {
		c := qmptest.Dial(t, sockPath)
		defer c.Close()
		c.Negotiate()
		var out []string
		for _, s := range script {
			out = append(out, strings.ReplaceAll(fmt.Sprint(qmptest.Normalize(c.Execute(s.cmd, s.args))), dir, "@DIR@"))
		}
		return out
	}
	qsock, _ := qmptest.StartQEMU(t)
	want := play(qsock)
	got := play(startVMM(t, nil).Sock)
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s %v\n  minivmm: %s\n  qemu:    %s", script[i].cmd, script[i].args, got[i], want[i])
		}
	}
}

// TestObjectOptionLikeQEMU: -object's refusals on the command line are
// qemu-system-x86_64's, word for word (an error of the object's files
// without the option's name, as QEMU prints it).
func TestObjectOptionLikeQEMU(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-system-x86_64")
	dir := t.TempDir()
	d := makeTLSDirs(t, dir)
	for _, value := range []string{
		"tls-creds-x509,id=t,dir=/nonexistent,endpoint=server",
		"tls-creds-x509,id=t,dir=" + d.cli + ",endpoint=server",
		"tls-creds-x509,id=t,dir=" + d.srv + ",endpoint=server,verify-peer=maybe",
		"tls-creds-x509,id=t,dir=" + d.srv + ",endpoint=server,loaded=on",
		"tls-creds-x509,id=t,dir=" + d.srv + ",endpoint=server,bogus=1",
		"tls-creds-x509,dir=" + d.srv,
		"id=t",
		"no-such-type,id=t",
	} {
		args := []string{"-machine", "none", "-nodefaults", "-display", "none", "-object", value}
		first := func(name string) string {
			out, err := exec.Command(name, args...).CombinedOutput()
			if err == nil {
				t.Errorf("%s accepted -object %s", name, value)
			}
			line := strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
			_, msg, _ := strings.Cut(line, ": ")
			return msg
		}
		if got, want := first(binary), first("qemu-system-x86_64"); got != want {
			t.Errorf("-object %s:\n  minivmm: %s\n  qemu:    %s", value, got, want)
		}
	}
	// Two objects with one id.
	obj := "tls-creds-x509,id=t,dir=" + d.srv + ",endpoint=server"
	args := []string{"-machine", "none", "-nodefaults", "-display", "none", "-object", obj, "-object", obj}
	want, _ := exec.Command("qemu-system-x86_64", args...).CombinedOutput()
	got, _ := exec.Command(binary, args...).CombinedOutput()
	if g, w := strings.TrimPrefix(string(got), "minivmm"), strings.TrimPrefix(string(want), "qemu-system-x86_64"); g != w {
		t.Errorf("duplicate -object:\n  minivmm: %s\n  qemu:    %s", got, want)
	}
}

// TestNBDTLSAuthzLikeQSD: tls-authz naming an authz-simple object lets
// in the client whose certificate's distinguished name it names, and no
// other, on minivmm as on qemu-storage-daemon.
func TestNBDTLSAuthzLikeQSD(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-storage-daemon")
	dir := t.TempDir()
	d := makeTLSDirs(t, dir)
	// A client whose name has several parts: the identity is written as
	// QEMU 7.2's GnuTLS writes the name, in the certificate's order (not
	// RFC 4514's reversed one).
	ca := tlstest.NewCA(t, "CA")
	srv := ca.ServerDir(t, filepath.Join(dir, "srv2"), tlstest.Server())
	org := tlstest.Client()
	org.Org, org.Country = "Example Org", "GB"
	cli := ca.ClientDir(t, filepath.Join(dir, "cli2"), org)
	for _, kind := range []string{"qemu-storage-daemon", "minivmm"} {
		for _, tt := range []struct {
			srv, cli, identity string
			ok                 bool
		}{
			{d.srv, d.cli, "CN=client", true},
			{d.srv, d.cli, "CN=someone else", false},
			{srv, cli, "C=GB,O=Example Org,CN=client", true},
			{srv, cli, "CN=client,O=Example Org,C=GB", false},
		} {
			sub, err := os.MkdirTemp(dir, kind)
			if err != nil {
				t.Fatal(err)
			}
			img := filepath.Join(sub, "d.raw")
			if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			sock, pid := tlsAuthzServer(t, kind, sub, img, tt.srv, tt.identity)
			base := steadyFds(t, pid)
			out, ok := attempt("qemu-img", sock, append([]string{"info"}, tlsOpts(tt.cli, "", sock, ",tls-hostname=localhost")...)...)
			if ok != tt.ok {
				t.Errorf("%s with identity %q: success %v, want %v:\n%s", kind, tt.identity, ok, tt.ok, out)
			}
			if kind == "minivmm" {
				settledFds(t, pid, base, "a client "+map[bool]string{true: "allowed", false: "denied"}[tt.ok])
			}
		}
	}
}
