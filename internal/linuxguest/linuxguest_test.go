package linuxguest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestCpioRoundTrip reads the archive back with busybox's cpio, a reader
// we did not write.
func TestCpioRoundTrip(t *testing.T) {
	k := Need(t)
	var buf bytes.Buffer
	if err := writeCpio(&buf, []cpioEntry{
		{name: "d", mode: modeDir | 0o755},
		{name: "d/f", mode: modeFile | 0o644, data: []byte("hello")},
		{name: "l", mode: modeSymlink | 0o777, data: []byte("d/f")},
	}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(k.Busybox, "cpio", "-t")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	if got, want := string(out), "d\nd/f\nl\n1 blocks\n"; got != want {
		t.Errorf("cpio -t listed %q, want %q", got, want)
	}
}

// TestGuestOnQSD validates the harness against the reference backend,
// qemu-storage-daemon's vhost-user-blk export: what the guest writes is
// what qemu-io then finds in the image.
func TestGuestOnQSD(t *testing.T) {
	k := Need(t)
	qsd, err := exec.LookPath("qemu-storage-daemon")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-storage-daemon not installed (CI=true)")
		}
		t.Skip("qemu-storage-daemon not installed; apt-get install qemu-system-x86")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "d.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", img, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	sock := filepath.Join(dir, "vu.sock")
	d := exec.Command(qsd, "--blockdev", "driver=file,node-name=f,filename="+img,
		"--blockdev", "driver=qcow2,node-name=d,file=f",
		"--export", "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path="+sock+",writable=on,num-queues=1")
	var derr bytes.Buffer
	d.Stderr = &derr
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { d.Process.Kill(); d.Wait() }()
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if i > 200 {
			t.Fatalf("qemu-storage-daemon did not listen: %s", derr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	writes := []Pattern{{Offset: 0, Len: 1 << 20, Byte: 0xa5}, {Offset: 4 << 20, Len: 2 << 20, Byte: 0x3c}}
	script := "echo CACHE $(cat /sys/block/vda/queue/write_cache | tr ' ' -)\n" + WriteScript(writes, nil)
	r, err := k.Run(context.Background(), dir, script, Boot{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	// qemu-storage-daemon 7.2 reports wce=0: the guest thinks writes
	// are durable on completion and never flushes.
	t.Logf("guest ran in %v; its disk's write cache: %s", r.Elapsed, r.Value("CACHE"))
	if r.Status != 0 {
		t.Fatalf("guest script exit %d:\n%s", r.Status, r.Console)
	}
	for _, m := range CheckSums(r, writes) {
		t.Error(m)
	}
	d.Process.Signal(os.Interrupt)
	d.Wait()
	for _, p := range writes {
		out, err := exec.Command("qemu-io", "-f", "qcow2", "-c",
			"read -P "+itoa(int64(p.Byte))+" "+itoa(p.Offset)+" "+itoa(p.Len), img).CombinedOutput()
		if err != nil || bytes.Contains(out, []byte("Pattern verification failed")) {
			t.Errorf("qemu-io read -P: %v\n%s", err, out)
		}
	}
}
