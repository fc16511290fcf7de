package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/internal/qmptest"
)

// rawImage makes a raw image of size bytes and opens it read-only and
// read-write, as a management layer hands images to a confined VMM.
func rawImage(t *testing.T, size int64) (string, []*os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path, openFiles(t, path, os.O_RDONLY, os.O_RDWR)
}

func workloadOK(t *testing.T, r map[string]any) {
	t.Helper()
	res := ret(t, r).(map[string]any)
	if res["ok"] != true || num(t, res["mismatch-count"]) != 0 || num(t, res["io-errors"]) != 0 {
		t.Fatalf("workload: %v", res)
	}
}

// TestHotplugLibvirtOrder plugs a device in and out as libvirt does
// (add-fd, blockdev-add, device_add; device_del, DEVICE_DELETED,
// blockdev-del, remove-fd), with QEMU's errors on the way, and checks
// that the VMM holds no fd more afterwards than before.
func TestHotplugLibvirtOrder(t *testing.T) {
	t.Parallel()
	_, files := rawImage(t, 8<<20)
	p := startVMM(t, nil, "-m", "64")
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	base := childFds(t, p.Pid)

	for round := 0; round < 2; round++ {
		ret(t, c.Execute("add-fd", map[string]any{"fdset-id": 1}, int(files[0].Fd())))
		ret(t, c.Execute("add-fd", map[string]any{"fdset-id": 1}, int(files[1].Fd())))
		ret(t, c.Execute("blockdev-add", map[string]any{"driver": "file", "filename": "/dev/fdset/1",
			"node-name": "f0", "auto-read-only": true, "discard": "unmap"}))
		ret(t, c.Execute("blockdev-add", map[string]any{"driver": "raw", "node-name": "d0", "file": "f0"}))
		ret(t, c.Execute("device_add", map[string]any{"driver": "virtio-blk-pci", "id": "vd0", "drive": "d0", "num-queues": 2, "bus": "pci.0"}))

		for _, e := range []struct {
			args map[string]any
			want string
		}{
			{map[string]any{"driver": "virtio-blk-pci", "id": "vd0", "drive": "d0"}, "Duplicate device ID 'vd0'"},
			{map[string]any{"driver": "virtio-blk-pci", "id": "vd1", "drive": "d0"},
				"Permission conflict on node 'd0': permissions 'write' are both required by block device '/machine/peripheral/vd0/virtio-backend' (uses node 'd0' as 'root' child) and unshared by block device '/machine/peripheral/vd1/virtio-backend' (uses node 'd0' as 'root' child)."},
			{map[string]any{"driver": "virtio-blk-pci", "id": "vd1", "drive": "nope"}, "Property 'virtio-blk-device.drive' can't find value 'nope'"},
			{map[string]any{"driver": "virtio-blk-pci", "id": "vd1"}, "drive property not set"},
			{map[string]any{"driver": "virtio-blk-pci", "id": "vd1", "drive": "d0", "bogus": 1}, "Property 'virtio-blk-pci.bogus' not found"},
			{map[string]any{"driver": "virtio-blk-pci", "id": "vd1", "drive": "d0", "queue-size": 3}, "invalid queue-size property (3), must be a power of 2 (max 1024)"},
			{map[string]any{"driver": "nosuch"}, "'nosuch' is not a valid device model name"},
		} {
			if got := errDesc(t, c.Execute("device_add", e.args)); got != e.want {
				t.Errorf("device_add %v: %q, want %q", e.args, got, e.want)
			}
		}
		if got := errDesc(t, c.Execute("blockdev-del", map[string]any{"node-name": "d0"})); got != "Node d0 is in use" {
			t.Errorf("blockdev-del under a device: %q", got)
		}
		list := ret(t, c.Execute("qom-list", map[string]any{"path": "/machine/peripheral"})).([]any)
		if len(list) != 2 || list[1].(map[string]any)["name"] != "vd0" || list[1].(map[string]any)["type"] != "child<virtio-blk-pci>" {
			t.Errorf("qom-list: %v", list)
		}
		workloadOK(t, c.Execute("x-workload", map[string]any{"spec": "rw=randrw,bs=4k,iodepth=16,numjobs=2,size=4m,io_size=1m,verify=on"}))

		ret(t, c.Execute("device_del", map[string]any{"id": "vd0"}))
		first := c.Event("DEVICE_DELETED", 10*time.Second)["data"].(map[string]any)
		second := c.Event("DEVICE_DELETED", 10*time.Second)["data"].(map[string]any)
		if first["path"] != "/machine/peripheral/vd0/virtio-backend" || second["device"] != "vd0" || second["path"] != "/machine/peripheral/vd0" {
			t.Errorf("DEVICE_DELETED: %v, then %v", first, second)
		}
		r := c.Execute("device_del", map[string]any{"id": "vd0"})
		if e := r["error"].(map[string]any); e["class"] != "DeviceNotFound" || e["desc"] != "Device 'vd0' not found" {
			t.Errorf("device_del twice: %v", r)
		}
		ret(t, c.Execute("blockdev-del", map[string]any{"node-name": "d0"}))
		ret(t, c.Execute("blockdev-del", map[string]any{"node-name": "f0"}))
		ret(t, c.Execute("remove-fd", map[string]any{"fdset-id": 1}))
		if got := childFds(t, p.Pid); len(got) != len(base) {
			t.Fatalf("round %d: VMM holds %d fds after unplug, %d before: %v", round, len(got), len(base), got)
		}
	}
}

// TestStopContDuringWorkload stops and continues the VMM over QMP while a
// verifying workload runs on another connection: it completes with
// every request accounted for and nothing found wrong.
func TestStopContDuringWorkload(t *testing.T) {
	t.Parallel()
	path, _ := rawImage(t, 16<<20)
	p := startVMM(t, nil, "-drive", "file="+path+",format=raw,if=none,id=drive0",
		"-device", "virtio-blk-pci,drive=drive0,id=vd0,num-queues=2,queue-size=64")
	runner := qmptest.Dial(t, p.Sock)
	runner.Negotiate()
	runner.SetTimeout(60 * time.Second)
	ctl := qmptest.Dial(t, p.Sock)
	ctl.Negotiate()
	runner.Send(`{"execute":"x-workload","arguments":{"spec":"rw=randrw,bs=4k,iodepth=32,numjobs=2,size=16m,runtime=2,verify=on"}}` + "\n")
	for i := 0; i < 3; i++ {
		time.Sleep(300 * time.Millisecond)
		ret(t, ctl.Execute("stop", nil))
		if st := ret(t, ctl.Execute("query-status", nil)).(map[string]any); st["status"] != "paused" {
			t.Fatalf("status %v", st)
		}
		time.Sleep(100 * time.Millisecond)
		ret(t, ctl.Execute("cont", nil))
	}
	r := runner.Reply()
	workloadOK(t, r)
	res := r["return"].(map[string]any)
	if num(t, res["read"].(map[string]any)["ios"]) == 0 || num(t, res["write"].(map[string]any)["ios"]) == 0 {
		t.Errorf("nothing done: %v", res)
	}
}

// TestWorkloadOption runs -workload from the command line: the result is
// printed on stdout.
func TestWorkloadOption(t *testing.T) {
	t.Parallel()
	path, _ := rawImage(t, 4<<20)
	p := startVMM(t, nil, "-drive", "file="+path+",format=raw,if=none,id=drive0",
		"-device", "virtio-blk-pci,drive=drive0,id=vd0",
		"-workload", "rw=write,bs=64k,iodepth=4,size=2m,verify=on")
	waitFor(t, "the workload's result", func() bool { return strings.Contains(p.Output(), "verify: ") })
	out := p.Output()
	if !strings.Contains(out, "write: IOPS=") || !strings.Contains(out, "0 mismatches") {
		t.Errorf("output:\n%s", out)
	}
}

func TestDeviceOptionErrors(t *testing.T) {
	t.Parallel()
	path, _ := rawImage(t, 1<<20)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-device", "virtio-blk-pci,drive=nope"}, "-device virtio-blk-pci,drive=nope: Property 'virtio-blk-device.drive' can't find value 'nope'"},
		{[]string{"-device", "virtio-blk-pci,drive=x,num-queues=x"}, "Parameter 'num-queues' expects integer"},
		{[]string{"-m", "foo"}, "-m foo: Parameter 'size' expects a non-negative number below 2^64"},
		{[]string{"-workload", "rw=trim"}, "-workload rw=trim: workload: parameter 'rw'"},
		{[]string{"-drive", "file=" + path + ",format=raw,if=none,id=d0", "-device", "virtio-blk-pci,drive=d0,id=a", "-device", "virtio-blk-pci,drive=d0,id=b"},
			"Drive 'd0' is already in use by another device"},
	} {
		q := qmptest.StartArgs(t, binary, nil, append([]string{"-machine", "none", "-display", "none", "-qmp", "unix:" + filepath.Join(t.TempDir(), "s") + ",server=on,wait=off"}, c.args...)...)
		if code := q.Wait(10 * time.Second); code != 1 || !strings.Contains(q.Output(), c.want) {
			t.Errorf("%v: exit %d, output %q, want %q", c.args, code, q.Output(), c.want)
		}
	}
}

// TestQuitDuringWorkload: quit from one client while another runs a long
// x-workload: the workload is cut short, its client gets its result, and
// the VMM exits promptly.
func TestQuitDuringWorkload(t *testing.T) {
	t.Parallel()
	path, _ := rawImage(t, 4<<20)
	p := startVMM(t, nil, "-drive", "file="+path+",format=raw,if=none,id=drive0", "-device", "virtio-blk-pci,drive=drive0,id=vd0")
	runner := qmptest.Dial(t, p.Sock)
	runner.Negotiate()
	ctl := qmptest.Dial(t, p.Sock)
	ctl.Negotiate()
	runner.Send(`{"execute":"x-workload","arguments":{"spec":"rw=randrw,iodepth=8,runtime=600,verify=on"}}` + "\n")
	time.Sleep(300 * time.Millisecond)
	began := time.Now()
	ret(t, ctl.Execute("quit", nil))
	workloadOK(t, runner.Reply())
	if code := p.Wait(20 * time.Second); code != 0 {
		t.Errorf("exit status %d", code)
	}
	if d := time.Since(began); d > 10*time.Second {
		t.Errorf("exit took %v", d)
	}
}

// TestDriveIfVirtio: -drive if=virtio makes a backend virtio0 and an
// anonymous virtio-blk-pci on it, as QEMU's; the workload runs on it.
func TestDriveIfVirtio(t *testing.T) {
	t.Parallel()
	path, _ := rawImage(t, 4<<20)
	p := startVMM(t, nil, "-drive", "file="+path+",format=raw,if=virtio")
	c := qmptest.Dial(t, p.Sock)
	c.Negotiate()
	list := ret(t, c.Execute("qom-list", map[string]any{"path": "/machine/peripheral-anon"})).([]any)
	if len(list) != 2 || list[1].(map[string]any)["name"] != "device[0]" {
		t.Errorf("qom-list: %v", list)
	}
	blocks := ret(t, c.Execute("query-block", nil)).([]any)
	if len(blocks) != 1 || blocks[0].(map[string]any)["device"] != "virtio0" {
		t.Errorf("query-block: %v", blocks)
	}
	workloadOK(t, c.Execute("x-workload", map[string]any{"spec": "rw=write,bs=64k,size=1m,verify=on"}))
}

// TestSnapshotDuringWorkload takes a live external snapshot of a device's
// drive while a verifying workload writes through it: the device follows
// its backend to the overlay, no request is lost, and verify stays clean
// across the switch; qemu-img finds both images clean.
func TestSnapshotDuringWorkload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	needQemuImg(t)
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", base, "16M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	p := startVMM(t, nil, "-blockdev", "driver=file,node-name=f0,filename="+base,
		"-blockdev", "driver=qcow2,node-name=d0,file=f0", "-device", "virtio-blk-pci,drive=d0,id=vd0,num-queues=2")
	runner := qmptest.Dial(t, p.Sock)
	runner.Negotiate()
	runner.SetTimeout(60 * time.Second)
	ctl := qmptest.Dial(t, p.Sock)
	ctl.Negotiate()
	runner.Send(`{"execute":"x-workload","arguments":{"spec":"rw=randrw,bs=4k,iodepth=16,numjobs=2,size=16m,runtime=1500ms,verify=on"}}` + "\n")
	time.Sleep(500 * time.Millisecond)
	overlay := filepath.Join(dir, "overlay.qcow2")
	ret(t, ctl.Execute("blockdev-snapshot-sync", map[string]any{"node-name": "d0", "snapshot-file": overlay,
		"snapshot-node-name": "ov", "format": "qcow2"}))
	workloadOK(t, runner.Reply())
	// A read pass after the switch checks what was written before it.
	workloadOK(t, ctl.Execute("x-workload", map[string]any{"spec": "rw=read,bs=64k,iodepth=4,size=16m,verify=on"}))
	ret(t, ctl.Execute("quit", nil))
	p.Wait(10 * time.Second)
	for _, img := range []string{base, overlay} {
		if out, err := exec.Command("qemu-img", "check", img).CombinedOutput(); err != nil {
			t.Errorf("qemu-img check %s: %v\n%s", img, err, out)
		}
	}
}

func needQemuImg(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img not installed (CI=true)")
		}
		t.Skip("qemu-img not installed; apt-get install qemu-utils")
	}
}
