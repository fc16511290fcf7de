package vutransport_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"minivmm/block"
	_ "minivmm/block/drivers"
	"minivmm/internal/fdtest"
	"minivmm/qemuopen"
	"minivmm/vm/blkdriver"
	"minivmm/vm/vhostuser"
	"minivmm/vm/vutransport"
	"minivmm/vm/workload"
)

func need(t testing.TB, tool string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (CI=true)", tool)
		}
		t.Skipf("%s not installed; apt-get install qemu-system-x86 qemu-utils", tool)
	}
}

// export serves a fresh image of format fmt_ on a vhost-user-blk socket:
// minivmm's export (in this process) or qemu-storage-daemon's.
func export(t *testing.T, kind, format string, size int64) (img, sock string) {
	t.Helper()
	need(t, "qemu-img")
	need(t, "qemu-storage-daemon")
	dir := t.TempDir()
	img, sock = filepath.Join(dir, "d."+format), filepath.Join(dir, "vu.sock")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", format, img, fmt.Sprint(size)).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, out)
	}
	if kind == "minivmm" {
		reg := qemuopen.New(qemuopen.Config{})
		g := block.NewGraph(reg)
		if _, err := g.AddRoot(block.Options{"driver": format, "node-name": "d",
			"file": block.Options{"driver": "file", "filename": img}}); err != nil {
			t.Fatal(err)
		}
		x := vhostuser.NewExports(g, t.Logf)
		t.Cleanup(func() { x.CloseAll(); g.Close(); reg.CloseAll() })
		if err := x.Add(vhostuser.ExportOptions{ID: "e", NodeName: "d", Path: sock, Writable: true, NumQueues: 1, LogicalBlockSize: 512}); err != nil {
			t.Fatal(err)
		}
		return img, sock
	}
	qsd := exec.Command("qemu-storage-daemon",
		"--blockdev", fmt.Sprintf("driver=%s,node-name=d,file.driver=file,file.filename=%s", format, img),
		"--export", "type=vhost-user-blk,id=e,node-name=d,addr.type=unix,addr.path="+sock+",writable=on")
	qsd.Stderr = os.Stderr
	if err := qsd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { qsd.Process.Signal(os.Interrupt); qsd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			return img, sock
		}
		if i > 1000 {
			t.Fatal("qemu-storage-daemon did not listen")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestVerifyWorkload runs the built-in guest's verifying workload, mixed
// random reads and writes at depth 16, on minivmm's export and on
// qemu-storage-daemon's, raw and qcow2: every block read back is the
// last one written there. The qcow2 images pass qemu-img check after.
func TestVerifyWorkload(t *testing.T) {
	fdtest.Check(t)
	for _, kind := range []string{"minivmm", "qemu-storage-daemon"} {
		for _, format := range []string{"raw", "qcow2"} {
			t.Run(kind+"/"+format, func(t *testing.T) {
				img, sock := export(t, kind, format, 16<<20)
				d, err := vutransport.Open(sock, 8<<20, blkdriver.Options{QueueSize: 128})
				if err != nil {
					t.Fatal(err)
				}
				spec, err := workload.Parse("rw=randrw,bs=4k,iodepth=16,numjobs=1,size=8M,runtime=1s,verify=on")
				if err != nil {
					t.Fatal(err)
				}
				res, err := workload.Run(spec, []workload.Target{{Name: "vda", Disk: d.Disk, Shadow: workload.NewShadow()}}, workload.Options{})
				if cerr := d.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					t.Fatal(err)
				}
				if !res.OK() {
					t.Fatalf("workload failed:\n%s", res)
				}
				if res.Verify.IOs == 0 && res.Read.IOs == 0 {
					t.Fatalf("nothing was read back:\n%s", res)
				}
				t.Logf("%s", res)
				if format == "qcow2" {
					if out, err := exec.Command("qemu-img", "check", "-U", img).CombinedOutput(); err != nil {
						t.Fatalf("qemu-img check: %v\n%s", err, out)
					}
				}
			})
		}
	}
}
