package main

// Conformance tests: one QMP script runs against the real QEMU
// (qemu-system-x86_64 -machine none -nodefaults -display none) and against
// minivmm, and the two transcripts must be equal step by step once
// qmptest.Normalize has replaced fd numbers by placeholders and dropped
// event timestamps.
//
// Known, deliberate differences are kept out of the comparison where the
// steps are written, each with a comment; every other difference is a
// minivmm bug.

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
	"minivmm/internal/qmptest"
)

// confFdMode says whether a step's command carries a file descriptor
// (SCM_RIGHTS), and how the test opens it: a fresh descriptor of the
// test's scratch file, which the test closes right after sending.
type confFdMode int

const (
	confNoFd confFdMode = iota
	confRoFd            // O_RDONLY
	confRwFd            // O_RDWR
)

type confStepKind int

const (
	// confExchange sends the command, reads its replies and records them
	// with the events that came before them.
	confExchange confStepKind = iota
	// confQuitStep is an exchange after which the connection must close;
	// whatever arrives until then is recorded too.
	confQuitStep
	// confShapeOnly records only the shape (members and JSON types) of the
	// reply: its values differ between the two VMMs by design.
	confShapeOnly
	// confCommandList records nothing; the names the reply lists are kept
	// for the query-commands check.
	confCommandList
	// confFdBaseline notes the number of fds minivmm has open (not recorded;
	// QEMU is not counted: it keeps fds minivmm closes, see the fd-passing
	// steps).
	confFdBaseline
	// confFdCheck checks that minivmm's fd count is back to the baseline.
	confFdCheck
)

// confStep is one line of a conformance script.
type confStep struct {
	name string
	// send is written as is, followed by "\n". $NAME is replaced by the
	// fd number saved under NAME by an earlier step (each VMM has its own
	// numbers); in error texts the number is put back as $NAME, so that
	// "fd:12" and "fd:23" compare equal when both are $hello.
	send    string
	fd      confFdMode
	replies int    // how many replies the command gets; 0 means 1
	save    string // save the reply's return.fd under this name
	// saveWhat, if set, picks what save keeps instead of return.fd (such
	// as a generated node name); ok false fails the test.
	saveWhat func(replies []map[string]any) (value string, ok bool)
	kind     confStepKind
	// check, if set, looks at the step's replies for either VMM
	// (r.pid is the VMM's process). It may also rewrite them before they
	// are recorded, to take out a known difference it has checked.
	check func(t *testing.T, r *confRun, replies []map[string]any)
}

// confRun is one VMM running one script.
type confRun struct {
	name     string // "qemu" or "minivmm"
	sock     string
	pid      int
	proc     *qmptest.Process // minivmm only
	scratch  string           // the file whose fds the steps pass
	steps    []string         // names of the recorded steps, in order
	record   []any            // one entry per recorded step
	commands []string         // what query-commands listed
	// afterStep, if set, is called with each recorded exchange's entry
	// (not after a quit) and may add members to it, which are compared
	// like the replies; c is the step's connection, for queries of its own.
	afterStep func(t *testing.T, r *confRun, c *qmptest.Client, entry map[string]any)
}

var confSavedRef = regexp.MustCompile(`\$[a-z][a-z0-9]*`)

// confPlay runs steps on r's VMM over one connection.
func confPlay(t *testing.T, r *confRun, steps []confStep) {
	t.Helper()
	c := qmptest.Dial(t, r.sock)
	c.SetTimeout(5 * time.Second)
	// The greeting's version, package and capabilities differ by design
	// (minivmm is not QEMU 7.2 and offers no oob): compare its shape only.
	r.steps = append(r.steps, "(greeting, shape only)")
	r.record = append(r.record, map[string]any{"greeting": confShape(c.Greeting())})

	saved := map[string]string{}
	baseline, baselineFds := -1, ""
	for _, s := range steps {
		switch s.kind {
		case confFdBaseline, confFdCheck:
			if r.proc == nil {
				continue
			}
			n, err := fdtest.CountOf(r.pid)
			if err != nil {
				t.Fatalf("%s: counting fds: %v", r.name, err)
			}
			if s.kind == confFdBaseline {
				baseline, baselineFds = n, confListFds(r.pid)
			} else if n != baseline {
				t.Errorf("%s: at step %q it has %d fds open, %d after startup; then:\n%snow:\n%s",
					r.name, s.name, n, baseline, baselineFds, confListFds(r.pid))
			}
			continue
		}

		used := map[string]string{} // $NAME -> number, for this step
		text := confSavedRef.ReplaceAllStringFunc(s.send, func(ref string) string {
			v, ok := saved[ref[1:]]
			if !ok {
				t.Fatalf("step %q uses %s, which no earlier step saved", s.name, ref)
			}
			used[ref] = v
			return v
		})
		var fds []int
		if s.fd != confNoFd {
			flags := unix.O_RDONLY
			if s.fd == confRwFd {
				flags = unix.O_RDWR
			}
			fd, err := unix.Open(r.scratch, flags|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			fds = []int{fd}
		}
		c.Send(text+"\n", fds...)
		for _, fd := range fds {
			unix.Close(fd) // the VMM has its own copy now
		}
		n := max(s.replies, 1)
		var replies []map[string]any
		for range n {
			replies = append(replies, c.Reply())
		}
		if s.kind == confQuitStep {
			c.WaitClosed(10 * time.Second)
		}
		events, more := c.Drain()
		replies = append(replies, more...)

		if s.save != "" && s.saveWhat != nil {
			v, ok := s.saveWhat(replies)
			if !ok {
				t.Fatalf("%s: step %q: nothing to save as $%s in %s", r.name, s.name, s.save, confShow(replies))
			}
			saved[s.save] = v
		} else if s.save != "" {
			ret, _ := replies[0]["return"].(map[string]any)
			fd, ok := ret["fd"].(json.Number)
			if !ok {
				t.Fatalf("%s: step %q: no fd to save in %s", r.name, s.name, confShow(replies[0]))
			}
			saved[s.save] = fd.String()
		}
		if s.check != nil {
			s.check(t, r, replies)
		}
		switch s.kind {
		case confCommandList:
			r.commands = confCommandNames(t, r, replies)
			continue
		case confShapeOnly:
			shaped := make([]any, len(replies))
			for i, m := range replies {
				shaped[i] = confShape(m)
			}
			r.steps = append(r.steps, s.name)
			r.record = append(r.record, map[string]any{"replies (shape)": shaped})
			continue
		}
		for _, m := range replies {
			confUnsave(m, used)
			if ret, ok := m["return"].(map[string]any); ok && r.proc == nil {
				// QEMU 7.2 still has query-status's "singlestep"; the
				// 9.1 minivmm claims to be has not (removed in 9.0).
				delete(ret, "singlestep")
			}
		}
		entry := map[string]any{"events": confAnys(events), "replies": confAnys(replies)}
		if s.kind == confQuitStep {
			entry["then"] = "connection closed"
		} else if r.afterStep != nil {
			r.afterStep(t, r, c, entry)
		}
		r.steps = append(r.steps, s.name)
		r.record = append(r.record, entry)
	}
}

// confUnsave puts $NAME back for the fd numbers a step's command used, in
// the texts that quote them ("File descriptor named 'fdset-id:1, fd:12'
// not found").
func confUnsave(m map[string]any, used map[string]string) {
	e, ok := m["error"].(map[string]any)
	if !ok {
		return
	}
	desc, ok := e["desc"].(string)
	if !ok {
		return
	}
	for ref, num := range used {
		desc = strings.ReplaceAll(desc, "fd:"+num+"'", "fd:"+ref+"'")
	}
	e["desc"] = desc
}

func confAnys(ms []map[string]any) []any {
	out := make([]any, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

// confShape replaces every value by its JSON type, keeping members and
// nesting.
func confShape(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			out[k] = confShape(e)
		}
		return out
	case []any:
		return "array"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func confCommandNames(t *testing.T, r *confRun, replies []map[string]any) []string {
	t.Helper()
	list, ok := replies[0]["return"].([]any)
	if len(replies) != 1 || !ok {
		t.Fatalf("%s: query-commands: unexpected reply %s", r.name, confShow(replies))
	}
	var names []string
	for _, e := range list {
		m, _ := e.(map[string]any)
		name, ok := m["name"].(string)
		if !ok || len(m) != 1 {
			t.Errorf("%s: query-commands entry %s is not {\"name\": string}", r.name, confShow(e))
			continue
		}
		names = append(names, name)
	}
	return names
}

// confShow is v as one line of JSON (map members sorted), placeholders
// such as "<fd:0>" left readable.
func confShow(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprintf("%#v", v)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// confListFds describes the fds process pid has open, for failure messages.
func confListFds(pid int) string {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var fds []int
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, n)
		}
	}
	sort.Ints(fds)
	var b strings.Builder
	for _, fd := range fds {
		target, _ := os.Readlink(dir + "/" + strconv.Itoa(fd))
		fmt.Fprintf(&b, "  %d -> %s\n", fd, target)
	}
	return b.String()
}

// runConformance plays steps on QEMU and on minivmm, both started with args
// (and files as fds 3, 4, ...), and compares the normalized transcripts.
func runConformance(t *testing.T, files []*os.File, args []string, steps []confStep) {
	t.Helper()
	runConformanceWith(t, confSetup{files: files, args: args}, steps)
}

// confSetup is how runConformanceWith starts the VMMs and what it adds to
// the comparison.
type confSetup struct {
	files []*os.File // inherited as fds 3, 4, ...
	args  []string
	// scratch is the file the steps' fds are opened on; "" makes a small
	// fresh one.
	scratch string
	// afterStep becomes each confRun's afterStep.
	afterStep func(t *testing.T, r *confRun, c *qmptest.Client, entry map[string]any)
	// rewrite, if set, is applied to each VMM's whole record (once, in
	// step order) before the two are normalized and compared.
	rewrite func(record []any) []any
}

// runConformanceWith is runConformance with more to set up.
func runConformanceWith(t *testing.T, setup confSetup, steps []confStep) {
	t.Helper()
	files, args, scratch := setup.files, setup.args, setup.scratch
	if scratch == "" {
		scratch = filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(scratch, []byte("minivmm conformance\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	qsock, qpid := qmptest.StartQEMUFiles(t, files, args...) // skips without QEMU
	qemu := &confRun{name: "qemu", sock: qsock, pid: qpid, scratch: scratch, afterStep: setup.afterStep}
	confPlay(t, qemu, steps)

	p := startVMM(t, files, args...)
	t.Cleanup(func() {
		// A minivmm that crashed may still be writing its panic: let it
		// finish, so that the output logged at cleanup is whole.
		if t.Failed() {
			if code := p.Wait(time.Second); code != -1 {
				t.Logf("minivmm exited with status %d", code)
			}
		}
	})
	vmm := &confRun{name: "minivmm", sock: p.Sock, pid: p.Pid, proc: p, scratch: scratch, afterStep: setup.afterStep}
	confPlay(t, vmm, steps)
	if slices.ContainsFunc(steps, func(s confStep) bool { return s.kind == confQuitStep }) {
		if code := p.Wait(10 * time.Second); code != 0 {
			t.Errorf("minivmm exit status %d after quit; output:\n%s", code, p.Output())
		}
	}

	if setup.rewrite != nil {
		qemu.record = setup.rewrite(qemu.record)
		vmm.record = setup.rewrite(vmm.record)
	}
	confCompare(t, qemu, vmm)

	// minivmm lists only the commands it has, QEMU 216: each of minivmm's
	// must be one of QEMU's.
	if qemu.commands != nil || vmm.commands != nil {
		if len(vmm.commands) == 0 {
			t.Errorf("minivmm's query-commands listed nothing")
		}
		for _, name := range vmm.commands {
			if !slices.Contains(qemu.commands, name) && !strings.HasPrefix(name, "x-") {
				t.Errorf("minivmm lists command %q, which QEMU does not have", name)
			}
		}
	}
}

// confCompare fails the test, printing both transcripts side by side step
// by step, unless they are equal after normalization. With
// MINIVMM_CONFORMANCE_DUMP=1 in the environment it logs them anyway.
func confCompare(t *testing.T, a, b *confRun) {
	t.Helper()
	na := qmptest.Normalize(a.record).([]any)
	nb := qmptest.Normalize(b.record).([]any)
	same := reflect.DeepEqual(na, nb) && slices.Equal(a.steps, b.steps)
	if same && os.Getenv("MINIVMM_CONFORMANCE_DUMP") == "" {
		return
	}
	var out strings.Builder
	const width = 90
	row := func(mark, left, right string) {
		if len(left) > width {
			fmt.Fprintf(&out, "%s %s\n%s %*s | %s\n", mark, left, mark, width, "", right)
			return
		}
		fmt.Fprintf(&out, "%s %-*s | %s\n", mark, width, left, right)
	}
	fmt.Fprintf(&out, "normalized transcripts; \"!!\" marks the steps that differ\n")
	row("  ", a.name, b.name)
	differ := 0
	for i := range max(len(na), len(nb)) {
		var ea, eb any
		name := ""
		if i < len(na) {
			ea, name = na[i], a.steps[i]
		}
		if i < len(nb) {
			eb = nb[i]
			if name == "" {
				name = b.steps[i]
			}
		}
		mark := "  "
		if !reflect.DeepEqual(ea, eb) {
			mark = "!!"
			differ++
		}
		fmt.Fprintf(&out, "%s --- step %d: %s\n", mark, i, name)
		la, lb := confLines(ea), confLines(eb)
		for j := range max(len(la), len(lb)) {
			var l, r string
			if j < len(la) {
				l = la[j]
			}
			if j < len(lb) {
				r = lb[j]
			}
			row(mark, l, r)
		}
	}
	if same {
		t.Logf("%s and %s agree:\n%s", a.name, b.name, out.String())
		return
	}
	t.Errorf("%d of %d steps differ between %s and %s:\n%s", differ, max(len(na), len(nb)), a.name, b.name, out.String())
}

// confLines shows one recorded step as one line per message.
func confLines(entry any) []string {
	m, ok := entry.(map[string]any)
	if !ok {
		return []string{"(missing)"}
	}
	var out []string
	for _, key := range []string{"greeting", "events", "replies", "replies (shape)"} {
		v, ok := m[key]
		if !ok {
			continue
		}
		list, isList := v.([]any)
		if !isList {
			out = append(out, key+": "+confShow(v))
			continue
		}
		for _, e := range list {
			prefix := "<- "
			if key == "events" {
				prefix = "<- event "
			}
			out = append(out, prefix+confShow(e))
		}
	}
	if then, ok := m["then"]; ok {
		out = append(out, fmt.Sprint(then))
	}
	// Members a confRun's afterStep added.
	for _, key := range slices.Sorted(maps.Keys(m)) {
		switch key {
		case "greeting", "events", "replies", "replies (shape)", "then":
			continue
		}
		out = append(out, key+": "+confShow(m[key]))
	}
	return out
}

// Numbers used in the scripts.
const (
	confMaxInt64   = "9223372036854775807"
	confMaxInt64p1 = "9223372036854775808"
)

func TestConformanceQMP(t *testing.T) {
	t.Parallel()
	steps := []confStep{
		// Before negotiation.
		{name: "query-status before negotiation", send: `{"execute": "query-status"}`},
		{name: "quit before negotiation (id)", send: `{"execute": "quit", "id": "q0"}`},
		{name: "unknown command before negotiation", send: `{"execute": "nosuch"}`},
		{name: "unknown member before negotiation", send: `{"execute": "query-status", "foo": 1, "id": 1}`},
		{name: "non-object before negotiation", send: `[]`},
		{name: "qmp_capabilities, unknown argument", send: `{"execute": "qmp_capabilities", "arguments": {"x": 1}}`},
		// ("enable": ["oob"] is left out: QEMU offers oob, minivmm does not.)
		{name: "qmp_capabilities, unknown capability", send: `{"execute": "qmp_capabilities", "arguments": {"enable": ["foo"]}}`},
		{name: "qmp_capabilities, enable not a list", send: `{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}}`},
		{name: "qmp_capabilities, enable a list of numbers", send: `{"execute": "qmp_capabilities", "arguments": {"enable": [1]}}`},
		{name: "qmp_capabilities, enable nothing", send: `{"execute": "qmp_capabilities", "arguments": {"enable": []}, "id": 1}`},
		{name: "fd baseline", kind: confFdBaseline},
		{name: "qmp_capabilities again", send: `{"execute": "qmp_capabilities"}`},
		{name: "qmp_capabilities again (id)", send: `{"execute": "qmp_capabilities", "id": "again"}`},
		{name: "unknown command", send: `{"execute": "nosuch"}`},
		{name: "unknown command (id)", send: `{"execute": "nosuch", "id": 7}`},
		// minivmm reports its own version and package, not QEMU 7.2's.
		{name: "query-version (shape only)", send: `{"execute": "query-version"}`, kind: confShapeOnly},
		// minivmm lists only its own commands; checked against QEMU's list instead.
		{name: "query-commands", send: `{"execute": "query-commands"}`, kind: confCommandList},

		// id echo.
		{name: "id string", send: `{"execute": "query-status", "id": "abc"}`},
		{name: "id empty string", send: `{"execute": "query-status", "id": ""}`},
		{name: "id number", send: `{"execute": "query-status", "id": 42}`},
		{name: "id negative", send: `{"execute": "query-status", "id": -5}`},
		{name: "id 2^63-1", send: `{"execute": "query-status", "id": ` + confMaxInt64 + `}`},
		{name: "id 2^63", send: `{"execute": "query-status", "id": ` + confMaxInt64p1 + `}`},
		{name: "id 2^64-1", send: `{"execute": "query-status", "id": 18446744073709551615}`},
		{name: "id object", send: `{"execute": "query-status", "id": {"a": [1, "b"], "c": null}}`},
		{name: "id array", send: `{"execute": "query-status", "id": [1,2]}`},
		{name: "id null", send: `{"execute": "query-status", "id": null}`},
		{name: "id true", send: `{"execute": "query-status", "id": true}`},
		{name: "id with escapes", send: `{"execute": "query-status", "id": "a\u0000b\/\u00e9"}`},
		{name: "id before execute", send: `{"id": "first", "execute": "query-status"}`},
		// Numbers are echoed as QEMU re-serializes them: integers exact in
		// int64 or uint64 range, anything else as a double ("%.17g").
		{name: "id 1.0", send: `{"execute": "query-status", "id": 1.0}`},
		{name: "id 1.5", send: `{"execute": "query-status", "id": 1.5}`},
		{name: "id 0.1", send: `{"execute": "query-status", "id": 0.1}`},
		{name: "id 1e2", send: `{"execute": "query-status", "id": 1e2}`},
		{name: "id -0", send: `{"execute": "query-status", "id": -0}`},
		{name: "id 2^64", send: `{"execute": "query-status", "id": 18446744073709551616}`},
		{name: "id -2^63-1", send: `{"execute": "query-status", "id": -9223372036854775809}`},
		{name: "id -0.0", send: `{"execute": "query-status", "id": -0.0}`},
		{name: "id 1e-400 (underflow)", send: `{"execute": "query-status", "id": 1e-400}`},
		{name: "id 4.9e-324", send: `{"execute": "query-status", "id": 4.9e-324}`},
		// (1e400 is left out: QEMU echoes it as "inf", which is not JSON.)
		{name: "id nested numbers", send: `{"execute": "query-status", "id": {"n": [1.0, -0, 2E+1]}}`},
		{name: "single-quoted strings", send: `{'execute': 'query-status', 'id': 'sq'}`},
		{name: "escapes in member names", send: `{"exec\u0075te": "query\u002dstatus", "\u0069d": "esc"}`},
		{name: "unexpected argument (id)", send: `{"execute": "query-status", "arguments": {"x": 1}, "id": 2}`},

		// Bad requests.
		{name: "non-object: array", send: `[]`},
		{name: "non-object: number", send: `1`},
		{name: "non-object: string", send: `"x"`},
		{name: "non-object: null", send: `null`},
		{name: "empty object", send: `{}`},
		{name: "id only", send: `{"id": 3}`},
		{name: "unknown top-level member", send: `{"execute": "query-status", "foo": 1, "id": 4}`},
		{name: "exec-oob", send: `{"exec-oob": "query-status", "id": 1}`},
		{name: "execute not a string", send: `{"execute": 1, "id": 3}`},
		{name: "execute null", send: `{"execute": null}`},
		{name: "arguments an array", send: `{"execute": "query-status", "arguments": []}`},
		{name: "arguments null (id)", send: `{"execute": "query-status", "arguments": null, "id": 6}`},
		{name: "arguments a string", send: `{"execute": "query-status", "arguments": "x"}`},
		{name: "arguments empty", send: `{"execute": "query-status", "arguments": {}}`},
		{name: "duplicate key", send: `{"execute": "query-status", "execute": "stop"}`},
		{name: "duplicate id", send: `{"execute": "query-status", "id": 1, "id": 2}`},
		{name: "duplicate key in arguments", send: `{"execute": "stop", "arguments": {"x": 1, "x": 2}}`},
		// Malformed JSON: only inputs on which QEMU 7.2 gives exactly one
		// error (its token-based recovery after an error answers every
		// leftover token of longer inputs on its own).
		{name: "malformed: missing value", send: `{"execute": }`},
		{name: "malformed: bare word", send: `abc`},
		{name: "malformed: stray }", send: `}`},
		{name: "malformed: missing colon", send: `{"execute" }`},
		{name: "malformed: two control bytes", send: "\x01\x02", replies: 2},
		{name: "malformed: byte 0xff before a command", send: "\xff" + `{"execute": "query-status", "id": "ff"}`, replies: 2},
		{name: "query-status after malformed input", send: `{"execute": "query-status"}`},
		{name: "empty command name", send: `{"execute": ""}`},
		{name: "non-object: true", send: `true`},
		// Input is a stream, not lines.
		{name: "two commands in one write", send: `{"execute": "query-status", "id": 1}{"execute": "query-status", "id": 2}`, replies: 2},

		// Run state.
		{name: "query-status", send: `{"execute": "query-status"}`},
		{name: "stop", send: `{"execute": "stop"}`},
		{name: "query-status paused", send: `{"execute": "query-status"}`},
		{name: "stop again (no event)", send: `{"execute": "stop", "id": "s2"}`},
		{name: "cont", send: `{"execute": "cont", "id": "c1"}`},
		{name: "cont again (no event)", send: `{"execute": "cont", "id": "c2"}`},
		{name: "stop, unexpected argument", send: `{"execute": "stop", "arguments": {"x": 1}}`},
		{name: "query-status running", send: `{"execute": "query-status"}`},

		// Fd passing, VM running (remove-fd on a paused VM differs by design:
		// QEMU <= 9.0 closes nothing, minivmm closes at once).
		//
		// QEMU keeps an fd sent with a command that takes none, or that fails
		// before running, for a later add-fd; minivmm closes it at once. So
		// the steps without an fd come first, and after a step whose fd
		// QEMU keeps pending, the next add-fd/getfd carries its own fd (which
		// replaces the pending one in QEMU).
		{name: "add-fd without an fd", send: `{"execute": "add-fd"}`},
		{name: "add-fd without an fd (id, fdset-id)", send: `{"execute": "add-fd", "arguments": {"fdset-id": 1}, "id": "nofd"}`},
		{name: "getfd without an fd", send: `{"execute": "getfd", "arguments": {"fdname": "a"}}`},
		{name: "query-fdsets, none", send: `{"execute": "query-fdsets"}`},
		{name: "add-fd (id)", send: `{"execute": "add-fd", "id": 1}`, fd: confRoFd, save: "a0"},
		{name: "add-fd opaque", send: `{"execute": "add-fd", "arguments": {"opaque": "hello"}}`, fd: confRwFd, save: "hello"},
		{name: "add-fd to set 0", send: `{"execute": "add-fd", "arguments": {"fdset-id": 0}}`, fd: confRwFd, save: "a1"},
		{name: "add-fd set 5 opaque", send: `{"execute": "add-fd", "arguments": {"fdset-id": 5, "opaque": "five"}}`, fd: confRoFd, save: "five"},
		{name: "add-fd set 3", send: `{"execute": "add-fd", "arguments": {"fdset-id": 3}}`, fd: confRoFd, save: "three"},
		{name: "add-fd lowest free id (2)", send: `{"execute": "add-fd"}`, fd: confRoFd, save: "two"},
		{name: "add-fd lowest free id (4)", send: `{"execute": "add-fd"}`, fd: confRwFd, save: "four"},
		{name: "add-fd set 2^63-1", send: `{"execute": "add-fd", "arguments": {"fdset-id": ` + confMaxInt64 + `}}`, fd: confRoFd, save: "max"},
		{name: "add-fd opaque empty", send: `{"execute": "add-fd", "arguments": {"fdset-id": 6, "opaque": ""}}`, fd: confRoFd, save: "six"},
		{name: "add-fd set 0 again", send: `{"execute": "add-fd", "arguments": {"fdset-id": 0, "opaque": "third"}}`, fd: confRoFd, save: "a2"},
		// The fds of the next steps but one stay pending in QEMU (argument
		// errors come before the command runs); each following step brings
		// its own fd.
		{name: "add-fd set 2^63 (type error)", send: `{"execute": "add-fd", "arguments": {"fdset-id": ` + confMaxInt64p1 + `}}`, fd: confRoFd},
		{name: "add-fd set -1", send: `{"execute": "add-fd", "arguments": {"fdset-id": -1}}`, fd: confRoFd},
		{name: "add-fd set a string", send: `{"execute": "add-fd", "arguments": {"fdset-id": "1"}}`, fd: confRoFd},
		{name: "add-fd set 1.5", send: `{"execute": "add-fd", "arguments": {"fdset-id": 1.5}}`, fd: confRoFd},
		{name: "add-fd opaque not a string", send: `{"execute": "add-fd", "arguments": {"opaque": 1}}`, fd: confRoFd},
		{name: "add-fd unexpected argument", send: `{"execute": "add-fd", "arguments": {"x": 1}, "id": "x"}`, fd: confRoFd},
		{name: "query-fdsets", send: `{"execute": "query-fdsets"}`},

		{name: "remove-fd one fd", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 1, "fd": $hello}}`},
		{name: "remove-fd the same fd again", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 1, "fd": $hello}}`},
		{name: "remove-fd a whole set", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 2}}`},
		{name: "remove-fd the same set again", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 2}, "id": 2}`},
		{name: "remove-fd unknown set and fd", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 7, "fd": 999}}`},
		{name: "remove-fd unknown fd of a set", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 0, "fd": 999}}`},
		{name: "remove-fd fd of another set", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 0, "fd": $five}}`},
		{name: "remove-fd set -1", send: `{"execute": "remove-fd", "arguments": {"fdset-id": -1}}`},
		{name: "remove-fd fd -1", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 0, "fd": -1}}`},
		{name: "remove-fd without fdset-id", send: `{"execute": "remove-fd", "arguments": {"fd": $a0}}`},
		{name: "remove-fd without arguments", send: `{"execute": "remove-fd"}`},
		{name: "remove-fd fdset-id a string", send: `{"execute": "remove-fd", "arguments": {"fdset-id": "0"}}`},
		{name: "remove-fd unexpected argument", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 0, "x": 1}}`},
		{name: "query-fdsets after removals", send: `{"execute": "query-fdsets"}`},
		{name: "remove-fd first fd of set 0", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 0, "fd": $a0}}`},
		{name: "query-fdsets, set 0 keeps its order", send: `{"execute": "query-fdsets"}`},
		{name: "remove-fd set 0", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 0}}`},
		{name: "remove-fd set 3", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 3, "fd": $three}}`},
		{name: "remove-fd set 4", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 4}}`},
		{name: "remove-fd set 5", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 5}}`},
		{name: "remove-fd set 6", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 6}}`},
		{name: "remove-fd set 2^63-1", send: `{"execute": "remove-fd", "arguments": {"fdset-id": ` + confMaxInt64 + `, "fd": $max}}`},
		{name: "query-fdsets, all removed", send: `{"execute": "query-fdsets"}`},

		// Named fds.
		{name: "getfd a", send: `{"execute": "getfd", "arguments": {"fdname": "a"}}`, fd: confRoFd},
		{name: "getfd a again (replaces it)", send: `{"execute": "getfd", "arguments": {"fdname": "a"}}`, fd: confRwFd},
		{name: "getfd name starting with a digit", send: `{"execute": "getfd", "arguments": {"fdname": "1a"}}`, fd: confRoFd},
		{name: "getfd empty name", send: `{"execute": "getfd", "arguments": {"fdname": ""}}`, fd: confRoFd},
		{name: "getfd odd name", send: `{"execute": "getfd", "arguments": {"fdname": "-x y/\u00e9"}}`, fd: confRoFd},
		{name: "getfd without fdname", send: `{"execute": "getfd"}`, fd: confRoFd},
		{name: "getfd fdname not a string", send: `{"execute": "getfd", "arguments": {"fdname": 1}}`, fd: confRoFd},
		{name: "query-fdsets lists no named fd", send: `{"execute": "query-fdsets"}`},
		{name: "closefd a", send: `{"execute": "closefd", "arguments": {"fdname": "a"}}`},
		{name: "closefd a again", send: `{"execute": "closefd", "arguments": {"fdname": "a"}}`},
		{name: "closefd empty name", send: `{"execute": "closefd", "arguments": {"fdname": ""}}`},
		{name: "closefd odd name", send: `{"execute": "closefd", "arguments": {"fdname": "-x y/\u00e9"}}`},
		{name: "closefd unknown name", send: `{"execute": "closefd", "arguments": {"fdname": "nosuch"}}`},
		{name: "closefd digit name", send: `{"execute": "closefd", "arguments": {"fdname": "1a"}}`},
		{name: "closefd unexpected argument", send: `{"execute": "closefd", "arguments": {"fdname": "a1", "y": 2}}`},
		{name: "closefd without fdname", send: `{"execute": "closefd"}`},
		// The fd of the failed getfd above is still held by the
		// connection (both VMMs): the next command that takes an fd gets it.
		{name: "getfd b takes the held fd", send: `{"execute": "getfd", "arguments": {"fdname": "b"}}`},
		{name: "getfd c: no fd held now", send: `{"execute": "getfd", "arguments": {"fdname": "c"}}`},
		{name: "closefd b", send: `{"execute": "closefd", "arguments": {"fdname": "b"}}`},
		{name: "fds back to the baseline", kind: confFdCheck},

		{name: "quit", send: `{"execute": "quit", "id": "q"}`, kind: confQuitStep},
	}
	runConformance(t, nil, nil, steps)
}

func TestConformancePrelaunch(t *testing.T) {
	t.Parallel()
	steps := []confStep{
		{name: "qmp_capabilities", send: `{"execute": "qmp_capabilities"}`},
		{name: "query-status prelaunch", send: `{"execute": "query-status"}`},
		{name: "stop in prelaunch (no event)", send: `{"execute": "stop"}`},
		{name: "query-status still prelaunch", send: `{"execute": "query-status"}`},
		{name: "cont", send: `{"execute": "cont"}`},
		{name: "query-status running", send: `{"execute": "query-status"}`},
		{name: "cont again (no event)", send: `{"execute": "cont"}`},
		{name: "stop", send: `{"execute": "stop"}`},
		{name: "query-status paused", send: `{"execute": "query-status"}`},
		{name: "quit while paused", send: `{"execute": "quit"}`, kind: confQuitStep},
	}
	runConformance(t, nil, []string{"-S"}, steps)
}

func TestConformanceCommandLineFds(t *testing.T) {
	t.Parallel()
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, []byte("image\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ro, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	rw, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	imgID := confFileID(t, img)

	// checkSets checks, in the VMM's /proc, that every fd query-fdsets
	// lists is open on the image with the access mode its opaque names,
	// and that none is the inherited original (3 or 4, closed once the
	// options are parsed).
	checkSets := func(t *testing.T, r *confRun, replies []map[string]any) {
		t.Helper()
		sets, _ := replies[0]["return"].([]any)
		listed := 0
		for _, s := range sets {
			set, _ := s.(map[string]any)
			fds, _ := set["fds"].([]any)
			for _, f := range fds {
				e, _ := f.(map[string]any)
				num, _ := e["fd"].(json.Number)
				opaque, _ := e["opaque"].(string)
				fd, err := strconv.Atoi(num.String())
				if err != nil {
					t.Errorf("%s: query-fdsets entry %s has no fd", r.name, confShow(e))
					continue
				}
				listed++
				if fd == 3 || fd == 4 {
					t.Errorf("%s lists fd %d, the inherited fd itself, not a dup", r.name, fd)
				}
				if id := confProcFileID(r.pid, fd); id != imgID {
					t.Errorf("%s: listed fd %d is not open on the image (%s)", r.name, fd, confProcTarget(r.pid, fd))
				}
				want := -1
				switch {
				case strings.HasPrefix(opaque, "rdonly:"):
					want = unix.O_RDONLY
				case strings.HasPrefix(opaque, "rdwr:"):
					want = unix.O_RDWR
				}
				if got := confProcAccMode(r.pid, fd); want >= 0 && got != want {
					t.Errorf("%s: fd %d (%s) has access mode %d, want %d", r.name, fd, opaque, got, want)
				}
			}
		}
		if listed != 2 {
			t.Errorf("%s: query-fdsets lists %d fds, want the 2 of the command line: %s", r.name, listed, confShow(replies))
		}
		for _, orig := range []int{3, 4} {
			if confProcFileID(r.pid, orig) == imgID {
				t.Errorf("%s still has the inherited fd %d open on the image", r.name, orig)
			}
		}
	}

	steps := []confStep{
		{name: "qmp_capabilities", send: `{"execute": "qmp_capabilities"}`},
		{name: "fd baseline", kind: confFdBaseline},
		{name: "query-fdsets: the command line's dups", send: `{"execute": "query-fdsets"}`, check: checkSets},
		{name: "add-fd to the command line's set", send: `{"execute": "add-fd", "arguments": {"fdset-id": 2, "opaque": "rdwr:/img"}}`, fd: confRwFd, save: "q"},
		{name: "add-fd lowest free id (0)", send: `{"execute": "add-fd", "arguments": {"opaque": "rdonly:/other"}}`, fd: confRoFd, save: "z"},
		{name: "query-fdsets", send: `{"execute": "query-fdsets"}`},
		{name: "remove-fd the added fd of set 2", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 2, "fd": $q}}`},
		{name: "remove-fd set 0", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 0}}`},
		{name: "query-fdsets: the command line's dups again", send: `{"execute": "query-fdsets"}`, check: checkSets},
		{name: "fds back to the baseline", kind: confFdCheck},
		{name: "remove-fd the command line's set", send: `{"execute": "remove-fd", "arguments": {"fdset-id": 2}}`},
		{name: "query-fdsets, empty", send: `{"execute": "query-fdsets"}`},
		{name: "quit", send: `{"execute": "quit"}`, kind: confQuitStep},
	}
	runConformance(t, []*os.File{ro, rw},
		[]string{"-add-fd", "fd=3,set=2,opaque=rdonly:/img", "-add-fd", "fd=4,set=2,opaque=rdwr:/img"}, steps)
}

// confFileID identifies a file by device and inode.
func confFileID(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// confProcFileID is the device and inode of what fd of process pid is open on
// ("" if it is not open).
func confProcFileID(pid, fd int) string {
	var st unix.Stat_t
	if err := unix.Stat(confProcFdPath(pid, fd), &st); err != nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func confProcFdPath(pid, fd int) string {
	return "/proc/" + strconv.Itoa(pid) + "/fd/" + strconv.Itoa(fd)
}

func confProcTarget(pid, fd int) string {
	target, err := os.Readlink(confProcFdPath(pid, fd))
	if err != nil {
		return "not open"
	}
	return target
}

// confProcAccMode is the O_ACCMODE part of the flags of fd in process pid, from
// /proc/PID/fdinfo (-1 if unknown).
func confProcAccMode(pid, fd int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				return -1
			}
			return int(flags) & unix.O_ACCMODE
		}
	}
	return -1
}
