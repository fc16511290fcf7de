package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// TestFdModesLikeQEMU plays one QMP script on qemu-system-x86_64 and on
// minivmm, each over its own copy of the same images, every image in an
// fdset of its own holding an O_RDONLY and an O_RDWR fd (ro's set only
// the O_RDONLY one), and compares, after every step, the modes of the fds
// each process holds on each image (/proc/PID/fdinfo, the fdsets' own fds
// left out), and every reply. The phases: blockdev-add of a read-write
// qcow2 over an auto-read-only file (read-write at once: the format
// takes write on its file whether or not anyone writes); a file node
// alone (read-only), then a qcow2 over it (read-write), then blockdev-del
// of each; a read-write qcow2 over a set without an O_RDWR fd (refused,
// in each one's words for that set); blockdev-reopen to read-write and
// back, of a qcow2 whose file is a node of its own; a device-less -drive
// (read-write); an intermediate block-commit (base read-write until the
// job is finalized, read-only after); blockdev-snapshot (the old top's
// file back to read-only); block-stream; active commit (the
// base read-write from the start, and after the switch); a mirror of
// the -drive completed (its image closed with it); blockdev-del of all.
func TestFdModesLikeQEMU(t *testing.T) {
	fdtest.Check(t)
	needTools(t, "qemu-img", "qemu-io", "qemu-system-x86_64")
	add := func(args string) string { return `{"execute":"blockdev-add","arguments":` + args + `}` }
	script := []string{
		`{"execute":"qmp_capabilities"}`,
		`add-fd 0 a O_RDONLY`, `add-fd 0 a O_RDWR`,
		`add-fd 1 b O_RDONLY`, `add-fd 1 b O_RDWR`,
		`add-fd 2 ro O_RDONLY`,
		`add-fd 3 r O_RDONLY`, `add-fd 3 r O_RDWR`,
		`add-fd 4 base O_RDONLY`, `add-fd 4 base O_RDWR`,
		`add-fd 5 mid O_RDONLY`, `add-fd 5 mid O_RDWR`,
		`add-fd 6 top O_RDONLY`, `add-fd 6 top O_RDWR`,
		`add-fd 7 ov O_RDONLY`, `add-fd 7 ov O_RDWR`,
		`add-fd 8 tgt O_RDONLY`, `add-fd 8 tgt O_RDWR`,
		`add-fd 9 base2 O_RDONLY`, `add-fd 9 base2 O_RDWR`,
		`add-fd 10 mid2 O_RDONLY`, `add-fd 10 mid2 O_RDWR`,
		`add-fd 11 top2 O_RDONLY`, `add-fd 11 top2 O_RDWR`,
		`fds`,

		// A read-write qcow2 over an auto-read-only file.
		add(`{"driver":"qcow2","node-name":"a","file":{"driver":"file","filename":"/dev/fdset/0","auto-read-only":true}}`),
		`fds`,
		// A file node alone, then a read-write qcow2 over it, then each
		// deleted.
		add(`{"driver":"file","node-name":"bf","filename":"/dev/fdset/1","auto-read-only":true}`),
		`fds`,
		add(`{"driver":"qcow2","node-name":"b","file":"bf"}`),
		`fds`,
		`{"execute":"blockdev-del","arguments":{"node-name":"b"}}`,
		`fds`,
		`{"execute":"blockdev-del","arguments":{"node-name":"bf"}}`,
		`fds`,
		// No O_RDWR fd to take: refused, nothing held.
		add(`{"driver":"qcow2","node-name":"c","file":{"driver":"file","filename":"/dev/fdset/2","auto-read-only":true}}`),
		`fds`,
		add(`{"driver":"file","node-name":"cf","filename":"/dev/fdset/2","auto-read-only":true}`),
		add(`{"driver":"qcow2","node-name":"c","file":"cf"}`),
		add(`{"driver":"qcow2","node-name":"c","read-only":true,"file":"cf"}`),
		`fds`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"c","read-only":false,"file":"cf"}]}}`,
		`fds`,
		// blockdev-reopen to read-write and back: the file node goes
		// with its parent's permissions, in the same transaction.
		add(`{"driver":"file","node-name":"rf","filename":"/dev/fdset/3","auto-read-only":true}`),
		add(`{"driver":"qcow2","node-name":"r","read-only":true,"file":"rf"}`),
		`fds`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"r","read-only":false,"file":"rf"}]}}`,
		`fds`,
		`{"execute":"blockdev-reopen","arguments":{"options":[{"driver":"qcow2","node-name":"r","read-only":true,"file":"rf"}]}}`,
		`fds`,

		// The jobs, in a fresh process, over files without
		// auto-read-only: QEMU 7.2 refuses every job on a node whose
		// auto-read-only file over an fdset went from read-only to
		// read-write ("Failed to get "write" lock": the fd it left
		// still holds its lock bytes), which minivmm does not.
		`restart`,
		// A chain; a mirror of the -drive, completed: its image goes
		// with it.
		add(`{"driver":"qcow2","node-name":"base","read-only":true,"file":{"driver":"file","filename":"/dev/fdset/4"}}`),
		add(`{"driver":"qcow2","node-name":"mid","read-only":true,"backing":"base","file":{"driver":"file","filename":"/dev/fdset/5"}}`),
		add(`{"driver":"qcow2","node-name":"top","backing":"mid","file":{"driver":"file","filename":"/dev/fdset/6"}}`),
		add(`{"driver":"qcow2","node-name":"tgt","file":{"driver":"file","filename":"/dev/fdset/8"}}`),
		`fds`,
		`{"execute":"blockdev-mirror","arguments":{"job-id":"m","device":"d0","target":"tgt","sync":"full"}}`,
		`wait BLOCK_JOB_READY`,
		`fds`,
		`{"execute":"block-job-complete","arguments":{"device":"m"}}`,
		`wait null`,
		`fds`,
		// Intermediate commit of mid into base, finalized by hand: base
		// read-write until then, read-only after.
		`{"execute":"block-commit","arguments":{"job-id":"c","device":"top","top-node":"mid","base-node":"base","auto-finalize":false}}`,
		`wait BLOCK_JOB_PENDING`,
		`fds`,
		`{"execute":"job-finalize","arguments":{"id":"c"}}`,
		`wait null`,
		`fds`,
		`{"execute":"blockdev-del","arguments":{"node-name":"top"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"mid"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"base"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"tgt"}}`,
		`fds`,

		// The second chain, in a fresh process (the same lock defect
		// after the commit's reopens).
		`restart`,
		add(`{"driver":"qcow2","node-name":"base2","read-only":true,"file":{"driver":"file","filename":"/dev/fdset/9"}}`),
		add(`{"driver":"qcow2","node-name":"mid2","read-only":true,"backing":"base2","file":{"driver":"file","filename":"/dev/fdset/10"}}`),
		add(`{"driver":"qcow2","node-name":"top2","backing":"mid2","file":{"driver":"file","filename":"/dev/fdset/11"}}`),
		add(`{"driver":"qcow2","node-name":"ov","backing":null,"file":{"driver":"file","filename":"/dev/fdset/7"}}`),
		`fds`,
		// Active commit of top2 into mid2: mid2 read-write from the
		// start, and after the switch.
		`{"execute":"block-commit","arguments":{"job-id":"ac","device":"top2","base-node":"mid2"}}`,
		`wait BLOCK_JOB_READY`,
		`fds`,
		`{"execute":"block-job-complete","arguments":{"device":"ac"}}`,
		`wait null`,
		`fds`,
		// A snapshot of mid2, now the active layer: its file goes back
		// to read-only.
		`{"execute":"blockdev-del","arguments":{"node-name":"top2"}}`,
		`{"execute":"blockdev-snapshot","arguments":{"node":"mid2","overlay":"ov"}}`,
		`fds`,
		// A stream of mid2 into ov.
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"ov","base-node":"base2"}}`,
		`wait null`,
		`fds`,
		`{"execute":"blockdev-del","arguments":{"node-name":"ov"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"mid2"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"base2"}}`,
		`fds`,
	}
	images := []string{"disk", "a", "b", "ro", "r", "base", "mid", "top", "ov", "tgt", "base2", "mid2", "top2"}
	play := func(dir string, start func() *qmptest.Process) []string {
		p := start()
		c := qmptest.Dial(t, p.Sock)
		quit := func() {
			c.Send(`{"execute":"quit"}`)
			c.WaitClosed(20 * time.Second)
			c.Close()
			if code := p.Wait(20 * time.Second); code != 0 {
				t.Errorf("exit status %d\n%s", code, p.Output())
			}
		}
		var got []string
		failed := false // the last command was refused: no job to wait for
		for _, cmd := range script {
			if cmd == "restart" {
				// A new process over the same images, with the same
				// fdsets.
				quit()
				p = start()
				c = qmptest.Dial(t, p.Sock)
				for _, cmd := range script {
					if strings.HasPrefix(cmd, "add-fd ") {
						scriptAddFd(t, c, dir, cmd)
					} else if strings.Contains(cmd, "qmp_capabilities") {
						c.Send(cmd)
						c.Reply()
					}
				}
				got = append(got, "")
				continue
			}
			if testing.Verbose() {
				t.Logf("pid %d: %s", p.Pid, cmd)
			}
			switch f := strings.Fields(cmd); f[0] {
			case "add-fd":
				scriptAddFd(t, c, dir, cmd)
				got = append(got, "")
			case "fds":
				got = append(got, scriptFds(t, c, p.Pid, dir, images))
			case "wait":
				// A job's end (null), or an event of its.
				for !failed {
					if f[1] != "null" {
						c.Event(f[1], 30*time.Second)
						break
					}
					e := c.Event("JOB_STATUS_CHANGE", 30*time.Second)
					if data, _ := e["data"].(map[string]any); data["status"] == "null" {
						break
					}
				}
				c.Drain()
				got = append(got, "")
			default:
				c.Send(cmd)
				r := c.Reply()
				failed = r["error"] != nil
				got = append(got, jobReply(r))
			}
		}
		quit()
		return got
	}
	ref := t.TempDir()
	jobChain(t, ref)
	for _, img := range []string{"disk", "a", "b", "ro", "r", "ov", "tgt"} {
		mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(ref, img+".qcow2"), "4M")
	}
	mustRun(t, "qemu-io", "-c", "write -P 7 0 1M", filepath.Join(ref, "disk.qcow2"))
	run := func(bin string) []string {
		dir := copyImages(t, ref, images)
		return play(dir, func() *qmptest.Process {
			return qmptest.Start(t, bin, nil,
				"-drive", "if=none,id=d0,node-name=drive0,format=qcow2,file="+filepath.Join(dir, "disk.qcow2"))
		})
	}
	qemu := run(qmptest.QEMUBinary)
	vmm := run(binary)
	for i := range script {
		if testing.Verbose() && qemu[i] != "" {
			t.Logf("%s\n  qemu:    %s\n  minivmm: %s", script[i], qemu[i], vmm[i])
		}
		if qemu[i] != vmm[i] {
			t.Errorf("step %d: %s\n  qemu:    %s\n  minivmm: %s", i, script[i], qemu[i], vmm[i])
		}
	}
}
