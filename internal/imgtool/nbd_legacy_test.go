package imgtool

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNBDLegacyOptionsDifferential: the nbd driver's legacy host, port
// and path options (json: filenames, --image-opts), their refusals, a
// host that does not resolve, and the filenames QEMU names such nodes
// (and a blkdebug node given a config and an image) with, side by side
// with qemu-img info against a qemu-nbd.
func TestNBDLegacyOptionsDifferential(t *testing.T) {
	icNeedQemuImg(t)
	nbd, err := exec.LookPath("qemu-nbd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-nbd not installed; apt-get install qemu-utils")
		}
		t.Skip("qemu-nbd not installed; apt-get install qemu-utils")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	for _, args := range [][]string{{"-k", sock}, {"-b", "127.0.0.1", "-p", port}} {
		srv := exec.Command(nbd, append(args, "--persistent", "-f", "raw", "null-co://")...)
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, e1 := os.Stat(sock)
		c, e2 := net.Dial("tcp", "127.0.0.1:"+port)
		if e2 == nil {
			c.Close()
		}
		if e1 == nil && e2 == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not start: %v %v", e1, e2)
		}
		time.Sleep(20 * time.Millisecond)
	}
	conf := filepath.Join(dir, "bd.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{`json:{"driver": "nbd", "host": -1}`},
		{`json:{"driver": "nbd", "host": "127.0.0.1", "port": ` + port + `}`},
		{`json:{"driver": "nbd", "host": "127.0.0.1", "port": "` + port + `", "export": ""}`},
		{`json:{"driver": "nbd", "path": "` + sock + `"}`},
		{"--image-opts", "driver=nbd,host=127.0.0.1,port=" + port},
		{`json:{"driver": "nbd", "path": "` + sock + `", "host": "127.0.0.1"}`},
		{`json:{"driver": "nbd", "path": "` + sock + `", "port": 1}`},
		{`json:{"driver": "nbd", "host": "127.0.0.1", "server.type": "inet"}`},
		{`json:{"driver": "nbd", "host": "127.0.0.1", "server": {"type": "unix", "path": "x"}}`},
		{`json:{"driver": "nbd", "server": {"type": "unix", "path": "` + sock + `"}}`},
		{`json:{"driver": "blkdebug", "config": "` + conf + `", "image.driver": "null-co"}`},
		{`json:{"driver": "nbd", "server": {"type": "unix", "path": "` + sock + `"}, "export": ""}`},
	} {
		full := append([]string{"info"}, args...)
		cmd := exec.Command("qemu-img", full...)
		want, _ := cmd.CombinedOutput()
		wantCode := cmd.ProcessState.ExitCode()
		var out bytes.Buffer
		code := runImg(full, &out, &out)
		// What a node is named, and any error: the first line.
		got, _, _ := strings.Cut(out.String(), "\n")
		w, _, _ := strings.Cut(string(want), "\n")
		if code != wantCode || got != w {
			t.Errorf("info %q: exit %d: %s\nqemu-img: exit %d: %s", args, code, got, wantCode, w)
		}
	}
}
