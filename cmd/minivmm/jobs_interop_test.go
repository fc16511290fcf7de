package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// jobChain makes, in dir, two chains of 4 MiB qcow2 images made by
// qemu-img and written by qemu-io: base <- mid <- top and base2 <- mid2
// <- top2, with data in every layer.
func jobChain(t *testing.T, dir string) {
	t.Helper()
	for _, s := range []string{"", "2"} {
		mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "base"+s+".qcow2"), "4M")
		mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base"+s+".qcow2", "-F", "qcow2", filepath.Join(dir, "mid"+s+".qcow2"), "4M")
		mustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid"+s+".qcow2", "-F", "qcow2", filepath.Join(dir, "top"+s+".qcow2"), "4M")
		mustRun(t, "qemu-io", "-c", "write -P 1 0 1M", "-c", "write -P 5 3M 64k", filepath.Join(dir, "base"+s+".qcow2"))
		mustRun(t, "qemu-io", "-c", "write -P 2 512k 1M", "-c", "write -z 2M 64k", filepath.Join(dir, "mid"+s+".qcow2"))
		mustRun(t, "qemu-io", "-c", "write -P 3 1M 512k", filepath.Join(dir, "top"+s+".qcow2"))
	}
}

// TestBlockJobsLikeQEMU plays one QMP script on qemu-system-x86_64 and
// on minivmm, each over its own copy of two three-image chains opened
// through fdsets (an O_RDONLY and an O_RDWR fd per image, as libvirt
// passes them; base2's set has only the O_RDONLY one): block-commit of
// an intermediate image with manual finalize and dismiss, job control and
// its refusals, blockdev-del of the nodes a job holds, a commit into a
// base without an O_RDWR fd, block-stream cancelled and then completed.
// Replies, the job events (timestamps, and progress while a job runs,
// normalized), the chains (query-named-block-nodes), and the modes of the
// fds each process holds on each image at every phase must be QEMU's;
// afterwards qemu-img check accepts every image and qemu-img compare
// finds both processes' chains equal to the untouched one.
func TestBlockJobsLikeQEMU(t *testing.T) {
	fdtest.Check(t)
	needTools(t, "qemu-img", "qemu-io", "qemu-system-x86_64")
	script := []string{
		`{"execute":"qmp_capabilities"}`,
		`add-fd 0 base O_RDONLY`, `add-fd 0 base O_RDWR`,
		`add-fd 1 mid O_RDONLY`, `add-fd 1 mid O_RDWR`,
		`add-fd 2 top O_RDONLY`, `add-fd 2 top O_RDWR`,
		`add-fd 3 base2 O_RDONLY`,
		`add-fd 4 mid2 O_RDONLY`, `add-fd 4 mid2 O_RDWR`,
		`add-fd 5 top2 O_RDONLY`, `add-fd 5 top2 O_RDWR`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"base","read-only":true,"file":{"driver":"file","node-name":"basef","filename":"/dev/fdset/0"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"mid","read-only":true,"backing":"base","file":{"driver":"file","node-name":"midf","filename":"/dev/fdset/1"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"top","backing":"mid","file":{"driver":"file","node-name":"topf","filename":"/dev/fdset/2"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"base2","read-only":true,"file":{"driver":"file","node-name":"base2f","filename":"/dev/fdset/3"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"mid2","read-only":true,"backing":"base2","file":{"driver":"file","node-name":"mid2f","filename":"/dev/fdset/4"}}}`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"top2","backing":"mid2","file":{"driver":"file","node-name":"top2f","filename":"/dev/fdset/5"}}}`,
		`fds`, `nodes`, `tree`,

		// Refusals, in QEMU's order of checks.
		`{"execute":"block-commit","arguments":{"device":"nope"}}`,
		`{"execute":"block-commit","arguments":{"device":"mid"}}`,
		`{"execute":"block-commit","arguments":{"device":"top","top-node":"mid"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"nope"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"mid","top":"x"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"mid","base-node":"top"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"mid","base-node":"base","base":"x"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"mid","base":"nope"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"base"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"mid","base-node":"mid"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"1a","device":"top","top-node":"mid"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"mid","on-error":"bogus"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","backing-file":"x"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"nope"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top","base-node":"mid","base":"x"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top","base-node":"nope"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top","base":"nope"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top","base-node":"top"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top","backing-file":"x"}}`,
		`{"execute":"job-pause","arguments":{"id":"nope"}}`,
		`{"execute":"job-dismiss","arguments":{"id":"nope"}}`,
		`{"execute":"block-job-pause","arguments":{"device":"nope"}}`,
		`{"execute":"block-job-cancel","arguments":{"device":"nope"}}`,
		`{"execute":"block-job-set-speed","arguments":{"device":"nope","speed":1}}`,
		`{"execute":"block-job-finalize","arguments":{"id":"nope"}}`,
		`{"execute":"query-block-jobs"}`,

		// A commit held at a crawl, then controlled.
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top","top-node":"mid","base-node":"base","speed":1,"auto-finalize":false,"auto-dismiss":false}}`,
		`fds`, `nodes`,
		// The job's nodes are its children: not roots, and busy.
		`{"execute":"block-commit","arguments":{"job-id":"c","device":"top"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"c","device":"top","top-node":"mid"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"j","device":"top2","top-node":"mid2"}}`,
		`{"execute":"query-block-jobs"}`,
		`{"execute":"query-jobs"}`,
		`{"execute":"block-job-complete","arguments":{"device":"j"}}`,
		`{"execute":"job-dismiss","arguments":{"id":"j"}}`,
		`{"execute":"job-finalize","arguments":{"id":"j"}}`,
		`{"execute":"block-job-resume","arguments":{"device":"j"}}`,
		`{"execute":"block-job-pause","arguments":{"device":"j"}}`,
		`wait JOB_STATUS_CHANGE paused`,
		`{"execute":"block-job-pause","arguments":{"device":"j"}}`,
		`{"execute":"query-block-jobs"}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"top"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"base"}}`,
		`{"execute":"block-job-resume","arguments":{"device":"j"}}`,
		`wait JOB_STATUS_CHANGE running`,
		`{"execute":"block-job-set-speed","arguments":{"device":"j","speed":-1}}`,
		`{"execute":"block-job-set-speed","arguments":{"device":"j","speed":0}}`,
		`wait BLOCK_JOB_PENDING`,
		`{"execute":"query-jobs"}`,
		`{"execute":"query-block-jobs"}`,
		`{"execute":"block-job-pause","arguments":{"device":"j"}}`,
		`{"execute":"block-job-set-speed","arguments":{"device":"j","speed":5}}`,
		`{"execute":"job-dismiss","arguments":{"id":"j"}}`,
		`fds`,
		`{"execute":"job-finalize","arguments":{"id":"j"}}`,
		`wait JOB_STATUS_CHANGE concluded`,
		`fds`,
		`{"execute":"query-jobs"}`,
		`{"execute":"job-dismiss","arguments":{"id":"j"}}`,
		`wait JOB_STATUS_CHANGE null`,
		`{"execute":"query-jobs"}`,
		`nodes`, `tree`,

		// A base whose set has no O_RDWR fd: the job fails before it runs.
		`{"execute":"block-commit","arguments":{"job-id":"k","device":"top2","top-node":"mid2","base-node":"base2"}}`,
		`wait JOB_STATUS_CHANGE null`,
		`fds`, `nodes`,

		// Stream: cancelled, then to the end.
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top2","base-node":"base2","speed":1}}`,
		`fds`, `nodes`,
		`{"execute":"block-job-cancel","arguments":{"device":"s"}}`,
		`wait JOB_STATUS_CHANGE null`,
		`nodes`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top2","base-node":"base2"}}`,
		`wait JOB_STATUS_CHANGE null`,
		`fds`, `nodes`, `tree`,
		`{"execute":"job-cancel","arguments":{"id":"s"}}`,

		// A named filter: its name is taken, and it is a node like any.
		`{"execute":"block-commit","arguments":{"job-id":"c","device":"top","top-node":"mid","filter-node-name":"base"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"c","device":"top","top-node":"mid","filter-node-name":"1x"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top","filter-node-name":"base"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top","filter-node-name":"1x"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s","device":"top","speed":1,"filter-node-name":"sf"}}`,
		`nodes`,
		`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"sf","file":"midf"}}`,
		`{"execute":"blockdev-del","arguments":{"node-name":"sf"}}`,
		`{"execute":"block-stream","arguments":{"job-id":"s2","device":"sf"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"c2","device":"sf"}}`,
		`{"execute":"block-commit","arguments":{"job-id":"c2","device":"top"}}`,
		`{"execute":"block-job-cancel","arguments":{"device":"s"}}`,
		`wait JOB_STATUS_CHANGE null`,
		`nodes`,
	}
	images := []string{"base", "mid", "top", "base2", "mid2", "top2"}
	play := func(dir string, p *qmptest.Process) []string {
		c := qmptest.Dial(t, p.Sock)
		defer c.Close()
		var got, pend []string
		drain := func() {
			ev, _ := c.Drain()
			for _, e := range ev {
				// Job events only: QEMU's RESUME at start-up may come late.
				if name, _ := e["event"].(string); strings.HasPrefix(name, "JOB_") || strings.HasPrefix(name, "BLOCK_JOB_") {
					pend = append(pend, jobEvent(e))
				}
			}
		}
		for _, cmd := range script {
			switch f := strings.Fields(cmd); f[0] {
			case "add-fd":
				scriptAddFd(t, c, dir, cmd)
				got = append(got, "")
			case "fds":
				got = append(got, scriptFds(t, c, p.Pid, dir, images))
			case "nodes":
				got = append(got, jobNodes(c.Execute("query-named-block-nodes", map[string]any{"flat": true})))
			case "tree":
				got = append(got, jobNodes(c.Execute("query-named-block-nodes", nil)))
			case "wait":
				got = append(got, scriptWait(c, f, &pend, drain, jobEvent))
			default:
				c.Send(cmd)
				got = append(got, jobReply(c.Reply()))
				drain()
			}
		}
		quitAndWait(t, c, p)
		return got
	}
	ref := t.TempDir()
	jobChain(t, ref)
	run := func(bin string) (string, []string) {
		dir := copyImages(t, ref, images)
		return dir, play(dir, qmptest.Start(t, bin, nil))
	}
	qdir, qemu := run(qmptest.QEMUBinary)
	vdir, vmm := run(binary)
	for i := range script {
		if testing.Verbose() {
			t.Logf("%s\n  qemu: %s", script[i], qemu[i])
		}
		if qemu[i] != vmm[i] {
			t.Errorf("%s\n  qemu:    %s\n  minivmm: %s", script[i], qemu[i], vmm[i])
		}
	}
	// The images: every one clean; each top reads as before the jobs,
	// over the chain that is left (whose headers name /dev/fdset/N, so
	// the backing is given here).
	for _, dir := range []string{qdir, vdir} {
		for _, img := range []string{"base", "mid", "base2", "mid2"} {
			if out, err := exec.Command("qemu-img", "check", filepath.Join(dir, img+".qcow2")).CombinedOutput(); err != nil {
				t.Errorf("qemu-img check %s/%s: %v\n%s", dir, img, err, out)
			}
		}
		for _, s := range []string{"", "2"} {
			after := `json:{"driver":"qcow2","file":{"driver":"file","filename":"` + filepath.Join(dir, "top"+s+".qcow2") +
				`"},"backing":{"driver":"qcow2","file":{"driver":"file","filename":"` + filepath.Join(dir, "base"+s+".qcow2") + `"}}}`
			if out, err := exec.Command("qemu-img", "check", after).CombinedOutput(); err != nil {
				t.Errorf("qemu-img check top%s in %s: %v\n%s", s, dir, err, out)
			}
			if out, err := exec.Command("qemu-img", "compare", filepath.Join(ref, "top"+s+".qcow2"), after).CombinedOutput(); err != nil {
				t.Errorf("qemu-img compare top%s in %s: %v\n%s", s, dir, err, out)
			}
		}
	}
}

// noRWFd matches both processes' texts for a set without an O_RDWR fd:
// QEMU 7.2's and minivmm's (QEMU 9.1's wording, naming the set's fds).
var noRWFd = regexp.MustCompile(`^(Could not dup FD for /dev/fdset/(\d+) flags 2: Permission denied|Failed to find file descriptor with matching flags=0x2 \(fdset (\d+) .*\))$`)

// jobReply is what the jobs test compares of a reply: errors whole (the
// no-O_RDWR-fd text reduced to the set it names), returns as JSON with
// what depends on timing masked in jobs that are still running.
func jobReply(r map[string]any) string {
	if e, ok := r["error"].(map[string]any); ok {
		desc, _ := e["desc"].(string)
		if m := noRWFd.FindStringSubmatch(desc); m != nil {
			desc = "<no O_RDWR fd in fdset " + m[2] + m[3] + ">"
		}
		return "error " + e["class"].(string) + ": " + desc
	}
	if list, ok := r["return"].([]any); ok {
		for _, e := range list {
			m, ok := e.(map[string]any)
			if !ok {
				continue
			}
			switch m["status"] {
			case "running", "paused", "ready", "standby":
				for _, k := range []string{"offset", "current-progress", "busy"} {
					if _, ok := m[k]; ok {
						m[k] = "<timing>"
					}
				}
			}
		}
	}
	b, _ := json.Marshal(qmptest.Normalize(r))
	return string(b)
}

// jobEvent is an event as the jobs test compares it: name and data, the
// offset of a cancelled job masked.
func jobEvent(e map[string]any) string {
	data, _ := e["data"].(map[string]any)
	if e["event"] == "JOB_STATUS_CHANGE" {
		return "JOB_STATUS_CHANGE " + data["status"].(string)
	}
	if e["event"] == "BLOCK_JOB_CANCELLED" {
		data["offset"] = "<timing>"
	}
	b, _ := json.Marshal(data)
	return e["event"].(string) + " " + string(b)
}

// jobNodes summarizes query-named-block-nodes: each node's name, read-only
// flag, backing depth and the backing file its image names.
func jobNodes(r map[string]any) string {
	list, ok := r["return"].([]any)
	if !ok {
		return jobReply(r)
	}
	var parts []string
	for _, e := range list {
		m := e.(map[string]any)
		img, _ := m["image"].(map[string]any)
		// The name of an implicit filter (commit_top) is made up.
		p := generatedName.ReplaceAllString(m["node-name"].(string), "#block") + " drv=" + jsonString(m["drv"]) + " ro=" + jsonString(m["ro"]) + " depth=" + jsonString(m["backing_file_depth"]) +
			" backing=" + jsonString(img["backing-filename"]) + " full=" + jsonString(img["full-backing-filename"])
		for b, ok := img["backing-image"].(map[string]any); ok; b, ok = b["backing-image"].(map[string]any) {
			f := jsonString(b["filename"])
			if strings.HasPrefix(f, "json:") {
				f = "json:..." // how each spells a json: filename is not what this test is about
			}
			p += " <- " + f
		}
		parts = append(parts, p)
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
