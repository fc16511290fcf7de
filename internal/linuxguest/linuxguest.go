// Package linuxguest boots a real Linux guest (Debian's cloud kernel and
// busybox) under qemu-system-x86_64 -accel tcg with its disk on a
// vhost-user-blk socket and/or a virtio-net card on QEMU's user
// networking, runs a shell script in it, and returns what the script
// printed on the serial console. It is for tests only.
package linuxguest

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// Modules are the kernel modules a virtio-blk disk on virtio-pci needs,
// in the order they must be loaded (no modules.dep in the image).
var modules = []string{
	"drivers/virtio/virtio_ring.ko",
	"drivers/virtio/virtio.ko",
	"drivers/virtio/virtio_pci_modern_dev.ko",
	"drivers/virtio/virtio_pci_legacy_dev.ko",
	"drivers/virtio/virtio_pci.ko",
	"drivers/block/virtio_blk.ko",
}

// netModules are what a virtio-net card needs, loaded after modules.
var netModules = []string{
	"net/core/failover.ko",
	"drivers/net/net_failover.ko",
	"drivers/net/virtio_net.ko",
}

// Kit is what a boot needs from the host: the kernel, its modules and a
// static busybox.
type Kit struct {
	Kernel     string // bzImage
	ModuleDir  string // /lib/modules/<version>/kernel
	Busybox    string
	QEMU       string
	rootPrefix string
}

// Roots are searched in order: $MINIVMM_GUEST_ROOT (a directory the
// packages were unpacked into with dpkg-deb -x), then the host itself,
// where .ci/run installs them.
func roots() []string {
	var r []string
	if d := os.Getenv("MINIVMM_GUEST_ROOT"); d != "" {
		r = append(r, d)
	}
	return append(r, "/")
}

// Need finds the kit, or skips the test with what to install; under
// CI=true a missing piece fails the test instead.
func Need(t testing.TB) *Kit {
	t.Helper()
	k, err := Find()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("real guest unavailable (CI=true): %v", err)
		}
		t.Skipf("real guest unavailable: %v (apt-get install qemu-system-x86 linux-image-cloud-amd64 busybox-static, "+
			"or unpack them with dpkg-deb -x into $MINIVMM_GUEST_ROOT)", err)
	}
	return k
}

// NeedModules skips the test (fails it under CI=true) unless the kit's
// kernel has the modules, paths under ModuleDir.
func (k *Kit) NeedModules(t testing.TB, mods ...string) {
	t.Helper()
	for _, m := range mods {
		if _, err := os.Stat(filepath.Join(k.ModuleDir, m)); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("the guest's kernel lacks %s (CI=true): %v", m, err)
			}
			t.Skipf("the guest's kernel lacks %s: %v", m, err)
		}
	}
}

// Find locates the kit without a test.
func Find() (*Kit, error) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, fmt.Errorf("qemu-system-x86_64 not installed")
	}
	var missing []string
	for _, root := range roots() {
		kernels, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*-cloud-amd64"))
		sort.Strings(kernels)
		bb := ""
		for _, p := range []string{"bin/busybox", "usr/bin/busybox"} {
			if fi, err := os.Stat(filepath.Join(root, p)); err == nil && fi.Mode().IsRegular() {
				bb = filepath.Join(root, p)
				break
			}
		}
		for i := len(kernels) - 1; i >= 0; i-- {
			ver := strings.TrimPrefix(filepath.Base(kernels[i]), "vmlinuz-")
			mods := ""
			for _, lib := range []string{"lib", "usr/lib"} {
				d := filepath.Join(root, lib, "modules", ver, "kernel")
				if _, err := os.Stat(filepath.Join(d, modules[len(modules)-1])); err == nil {
					mods = d
					break
				}
			}
			if mods != "" && bb != "" && isStatic(bb) {
				return &Kit{Kernel: kernels[i], ModuleDir: mods, Busybox: bb, QEMU: qemu, rootPrefix: root}, nil
			}
		}
		switch {
		case len(kernels) == 0:
			missing = append(missing, root+": no boot/vmlinuz-*-cloud-amd64")
		case bb == "" || !isStatic(bb):
			missing = append(missing, root+": no static busybox")
		default:
			missing = append(missing, root+": no virtio_blk.ko for "+kernels[len(kernels)-1])
		}
	}
	return nil, fmt.Errorf("%s", strings.Join(missing, "; "))
}

// isStatic tells a static busybox (busybox-static) from a dynamic one,
// which would not run in an initramfs without its libraries: a dynamic
// ELF has a PT_INTERP naming its loader.
func isStatic(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	return !bytes.Contains(b[:min(len(b), 4096)], []byte("/lib64/ld-linux"))
}

// The init script: mount the pseudo file systems, load the modules, wait
// for the disk or set the network up, run the test's script between two
// markers the host looks for, and power off (the machine runs with
// -no-reboot).
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in %s; do insmod /lib/modules/$m || echo "LINUXGUEST insmod $m failed"; done
%s
echo LINUXGUEST-BEGIN
sh /test.sh
echo "LINUXGUEST-END $?"
poweroff -f
`

// waitDisk waits for the vhost-user-blk disk to appear.
const waitDisk = `i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
`

// Guest and host addresses on QEMU's user network (-netdev user): the
// guest takes GuestAddr statically (no DHCP client needed), and HostAddr
// is the host's 127.0.0.1 as the guest reaches it.
const (
	GuestAddr = "10.0.2.15"
	HostAddr  = "10.0.2.2"
)

const netUp = `i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
ip link set lo up
ip addr add ` + GuestAddr + `/24 dev eth0 && ip link set eth0 up && ip route add default via ` + HostAddr + ` ||
  echo "LINUXGUEST network setup failed"
`

// File is an extra file of the initramfs (a test's guest-side program).
type File struct {
	Name string // path without the leading /, such as bin/nbdclient; its directory must exist (bin, lib, tmp)
	Mode uint32 // permissions; 0o755 when 0
	Data []byte
}

// Initramfs builds a gzipped initramfs that runs script as /test.sh, for
// a guest with a vhost-user-blk disk.
func (k *Kit) Initramfs(script string) ([]byte, error) {
	return k.initramfs(script, Boot{Socket: "-"})
}

// initramfs builds the initramfs for boot b: the modules and set-up its
// devices need, and its extra files.
func (k *Kit) initramfs(script string, b Boot) ([]byte, error) {
	bb, err := os.ReadFile(k.Busybox)
	if err != nil {
		return nil, err
	}
	var names []string
	entries := []cpioEntry{
		{name: "bin", mode: modeDir | 0o755},
		{name: "dev", mode: modeDir | 0o755},
		{name: "dev/console", mode: modeChar | 0o600, major: 5, minor: 1},
		{name: "proc", mode: modeDir | 0o755},
		{name: "sys", mode: modeDir | 0o755},
		{name: "tmp", mode: modeDir | 0o1777},
		{name: "lib", mode: modeDir | 0o755},
		{name: "lib/modules", mode: modeDir | 0o755},
		{name: "bin/busybox", mode: modeFile | 0o755, data: bb},
		{name: "bin/sh", mode: modeSymlink | 0o777, data: []byte("busybox")},
	}
	mods := append([]string(nil), modules...)
	setup := ""
	if b.Socket != "" {
		setup += waitDisk
	}
	if b.Net {
		mods = append(mods, netModules...)
		setup += netUp
	}
	for _, m := range append(mods, b.Modules...) {
		data, err := os.ReadFile(filepath.Join(k.ModuleDir, m))
		if err != nil {
			return nil, err
		}
		name := filepath.Base(m)
		names = append(names, name)
		entries = append(entries, cpioEntry{name: "lib/modules/" + name, mode: modeFile | 0o644, data: data})
	}
	for _, f := range b.Files {
		mode := f.Mode
		if mode == 0 {
			mode = 0o755
		}
		entries = append(entries, cpioEntry{name: f.Name, mode: modeFile | mode, data: f.Data})
	}
	entries = append(entries,
		cpioEntry{name: "init", mode: modeFile | 0o755, data: []byte(fmt.Sprintf(initScript, strings.Join(names, " "), setup))},
		cpioEntry{name: "test.sh", mode: modeFile | 0o755, data: []byte(script)})
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if err := writeCpio(zw, entries); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Boot describes one run of the guest.
type Boot struct {
	Socket    string        // vhost-user-blk backend's unix socket; no disk when ""
	NumQueues int           // vhost-user-blk-pci num-queues; 1 when 0
	MemMiB    int           // guest memory; 256 when 0
	CPUs      int           // vCPUs; 1 when 0 (virtio-blk uses a queue per vCPU at most)
	Timeout   time.Duration // whole run; 60 s when 0
	Reconnect bool          // -chardev ...,reconnect=1
	// Started, if set, is called with the QEMU process once it runs (a
	// test that kills the front end mid-request uses it).
	Started func(*os.Process)
	// Console, if set, gets the serial console as it comes.
	Console io.Writer
	// Net adds a virtio-net card on QEMU's user network, up as eth0 at
	// GuestAddr before the script runs.
	Net bool
	// Modules are more kernel modules to load, in order, after those of
	// the devices: paths under the kit's ModuleDir, such as
	// drivers/block/nbd.ko.
	Modules []string
	// Files are put into the initramfs.
	Files []File
}

// Result is what the guest printed.
type Result struct {
	Console string   // the whole serial console and QEMU's stderr
	Lines   []string // the script's output, between the markers
	Status  int      // the script's exit status; -1 if it did not finish
	Elapsed time.Duration
}

// Run boots the guest with script as its test and waits for it to power
// off. dir holds the initramfs.
func (k *Kit) Run(ctx context.Context, dir, script string, b Boot) (*Result, error) {
	img, err := k.initramfs(script, b)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	initrd := filepath.Join(dir, "initrd.gz")
	if err := os.WriteFile(initrd, img, 0o644); err != nil {
		return nil, err
	}
	if b.NumQueues == 0 {
		b.NumQueues = 1
	}
	if b.MemMiB == 0 {
		b.MemMiB = 256
	}
	if b.Timeout == 0 {
		b.Timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, b.Timeout)
	defer cancel()
	if b.CPUs == 0 {
		b.CPUs = 1
	}
	args := []string{"-accel", "tcg", "-m", fmt.Sprint(b.MemMiB), "-smp", fmt.Sprint(b.CPUs),
		"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", b.MemMiB),
		"-machine", "memory-backend=mem"}
	if b.Socket != "" {
		chardev := "socket,id=c,path=" + b.Socket
		if b.Reconnect {
			chardev += ",reconnect=1"
		}
		args = append(args, "-chardev", chardev,
			"-device", fmt.Sprintf("vhost-user-blk-pci,chardev=c,num-queues=%d", b.NumQueues))
	}
	if b.Net {
		args = append(args, "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,romfile=")
	}
	args = append(args, "-kernel", k.Kernel, "-initrd", initrd,
		"-append", "console=ttyS0 quiet panic=-1",
		"-serial", "stdio", "-nodefaults", "-display", "none", "-no-reboot")
	cmd := exec.CommandContext(ctx, k.QEMU, args...)
	var out bytes.Buffer
	var w io.Writer = &out
	if b.Console != nil {
		w = io.MultiWriter(&out, b.Console)
	}
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if b.Started != nil {
		b.Started(cmd.Process)
	}
	werr := cmd.Wait()
	r := parse(out.String())
	r.Elapsed = time.Since(start)
	if ctx.Err() != nil {
		return r, fmt.Errorf("guest did not power off within %v: %w\n%s", b.Timeout, ctx.Err(), r.Console)
	}
	if werr != nil {
		return r, fmt.Errorf("qemu-system-x86_64: %w\n%s", werr, r.Console)
	}
	return r, nil
}

func parse(console string) *Result {
	r := &Result{Console: console, Status: -1}
	in := false
	for _, l := range strings.Split(strings.ReplaceAll(console, "\r", ""), "\n") {
		switch {
		case l == "LINUXGUEST-BEGIN":
			in = true
		case strings.HasPrefix(l, "LINUXGUEST-END "):
			fmt.Sscan(strings.TrimPrefix(l, "LINUXGUEST-END "), &r.Status)
			in = false
		case in:
			r.Lines = append(r.Lines, l)
		}
	}
	return r
}
