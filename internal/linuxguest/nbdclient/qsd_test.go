package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestNegotiateQSD: the handshake against a server we did not write,
// qemu-storage-daemon, so that the guest's client is checked apart from
// minivmm's server it is used to test.
func TestNegotiateQSD(t *testing.T) {
	for _, tool := range []string{"qemu-img", "qemu-storage-daemon"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not installed (CI=true)", tool)
			}
			t.Skipf("%s not installed; apt-get install qemu-utils qemu-system-x86", tool)
		}
	}
	dir := t.TempDir()
	img, sock := filepath.Join(dir, "d.raw"), filepath.Join(dir, "s.sock")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "raw", img, "3M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	qsd := exec.Command("qemu-storage-daemon", "--blockdev", "driver=file,node-name=f,filename="+img+",read-only=on",
		"--nbd-server", "addr.type=unix,addr.path="+sock, "--export", "type=nbd,id=e,node-name=f,name=disk")
	if err := qsd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { qsd.Process.Kill(); qsd.Wait() }()
	var c net.Conn
	for i := 0; ; i++ {
		var err error
		if c, err = net.Dial("unix", sock); err == nil {
			break
		}
		if i > 500 {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	e, err := negotiate(c, "disk")
	if err != nil {
		t.Fatal(err)
	}
	// QEMU 7.2's read-only export: HAS_FLAGS, READ_ONLY, SEND_FLUSH,
	// SEND_FUA, CAN_MULTI_CONN, SEND_CACHE; no structured replies asked.
	want := export{size: 3 << 20, flags: 0x1 | 0x2 | 0x4 | 0x8 | 0x100 | 0x400, minBlock: 1, prefBlock: 4096, max: 32 << 20}
	if e != want {
		t.Errorf("export %+v, want %+v", e, want)
	}
	c2, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := negotiate(c2, "nope"); err == nil {
		t.Error("qemu-storage-daemon accepted an unknown export name")
	}
}
