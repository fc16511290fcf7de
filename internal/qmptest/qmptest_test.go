package qmptest

import (
	"encoding/json"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"minivmm/internal/fdtest"
)

// decode decodes s as Client does (numbers as json.Number).
func decode(t *testing.T, s string) any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestNormalize(t *testing.T) {
	a := decode(t, `{"return": [{"fds": [{"fd": 12}, {"fd": 15, "opaque": "x"}], "fdset-id": 2}, {"fds": [{"fd": 11}, {"fd": 12}], "fdset-id": 0}]}`)
	b := decode(t, `{"return": [{"fds": [{"fd": 40}, {"fd": 7, "opaque": "x"}], "fdset-id": 2}, {"fds": [{"fd": 9}, {"fd": 40}], "fdset-id": 0}]}`)
	if !reflect.DeepEqual(Normalize(a), Normalize(b)) {
		t.Errorf("Normalize differs:\n%v\n%v", Normalize(a), Normalize(b))
	}
	c := decode(t, `{"return": [{"fds": [{"fd": 12}, {"fd": 15, "opaque": "x"}], "fdset-id": 2}, {"fds": [{"fd": 11}, {"fd": 13}], "fdset-id": 0}]}`)
	if reflect.DeepEqual(Normalize(a), Normalize(c)) {
		t.Errorf("Normalize hides that an fd is listed twice")
	}
	want := decode(t, `{"return": {"fd": "<fd:0>", "fdset-id": 1}}`)
	if got := Normalize(decode(t, `{"return": {"fd": 11, "fdset-id": 1}}`)); !reflect.DeepEqual(got, want) {
		t.Errorf("Normalize(add-fd reply) = %v, want %v", got, want)
	}
	ev := decode(t, `{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}`)
	if got, want := Normalize(ev), decode(t, `{"event": "STOP"}`); !reflect.DeepEqual(got, want) {
		t.Errorf("Normalize(event) = %v, want %v", got, want)
	}
	// A reply's "timestamp" (not an event) is left alone, and the input is not modified.
	r := decode(t, `{"return": {"timestamp": 5, "fd": "name"}}`)
	if got := Normalize(r); !reflect.DeepEqual(got, r) {
		t.Errorf("Normalize changed %v into %v", r, got)
	}
	if !reflect.DeepEqual(a, decode(t, `{"return": [{"fds": [{"fd": 12}, {"fd": 15, "opaque": "x"}], "fdset-id": 2}, {"fds": [{"fd": 11}, {"fd": 12}], "fdset-id": 0}]}`)) {
		t.Errorf("Normalize modified its input")
	}
}

// procFD is what fd number fd of process pid refers to, or "" if it is not open.
func procFD(pid int, fd json.Number) string {
	target, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd.String())
	if err != nil {
		return ""
	}
	return target
}

func TestQEMUFdPassing(t *testing.T) {
	fdtest.Check(t)
	sock, pid := StartQEMU(t)
	c := Dial(t, sock)
	if _, ok := c.Greeting()["QMP"].(map[string]any)["version"]; !ok {
		t.Fatalf("greeting without version: %v", c.Greeting())
	}
	c.Negotiate()

	f, err := os.CreateTemp(t.TempDir(), "fdset")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	r := c.Execute("add-fd", map[string]any{"fdset-id": 3, "opaque": "test"}, int(f.Fd()))
	ret, ok := r["return"].(map[string]any)
	if !ok {
		t.Fatalf("add-fd: %v", r)
	}
	if ret["fdset-id"] != json.Number("3") {
		t.Errorf("add-fd fdset-id = %v, want 3", ret["fdset-id"])
	}
	qfd, ok := ret["fd"].(json.Number)
	if !ok {
		t.Fatalf("add-fd fd = %#v", ret["fd"])
	}
	if got := procFD(pid, qfd); got != f.Name() {
		t.Errorf("QEMU's fd %s refers to %q, want %q", qfd, got, f.Name())
	}

	r = c.Execute("query-fdsets", nil)
	want := decode(t, `{"return": [{"fds": [{"fd": "<fd:0>", "opaque": "test"}], "fdset-id": 3}]}`)
	if got := Normalize(r); !reflect.DeepEqual(got, want) {
		t.Errorf("query-fdsets = %v, want %v", got, want)
	}
	if got := r["return"].([]any)[0].(map[string]any)["fds"].([]any)[0].(map[string]any)["fd"]; got != qfd {
		t.Errorf("query-fdsets lists fd %v, add-fd returned %v", got, qfd)
	}

	r = c.Execute("remove-fd", map[string]any{"fdset-id": 3, "fd": qfd})
	if !reflect.DeepEqual(r, map[string]any{"return": map[string]any{}}) {
		t.Errorf("remove-fd = %v", r)
	}
	if got := procFD(pid, qfd); got != "" {
		t.Errorf("QEMU's fd %s still open after remove-fd (%s)", qfd, got)
	}
	r = c.Execute("query-fdsets", nil)
	if !reflect.DeepEqual(r, map[string]any{"return": []any{}}) {
		t.Errorf("query-fdsets after remove-fd = %v", r)
	}
	r = c.Execute("remove-fd", map[string]any{"fdset-id": 3})
	wantErr := decode(t, `{"error": {"class": "GenericError", "desc": "File descriptor named 'fdset-id:3' not found"}}`)
	if !reflect.DeepEqual(r, wantErr) {
		t.Errorf("second remove-fd = %v, want %v", r, wantErr)
	}
}

func TestQEMUIdsAndEvents(t *testing.T) {
	fdtest.Check(t)
	sock, _ := StartQEMU(t)
	c := Dial(t, sock)

	r := c.Execute("query-status", nil)
	if r["error"].(map[string]any)["class"] != "CommandNotFound" {
		t.Errorf("command before negotiation: %v", r)
	}
	c.Negotiate()

	c.Send(`{"execute": "query-status", "id": 9223372036854775807}`)
	if r := c.Reply(); r["id"] != json.Number("9223372036854775807") {
		t.Errorf("id = %#v", r["id"])
	}

	r = c.Execute("stop", nil)
	if _, ok := r["return"]; !ok {
		t.Fatalf("stop: %v", r)
	}
	ev := c.Event("STOP", time.Second) // QEMU sends it before the reply: it is queued
	if got, want := Normalize(ev), decode(t, `{"event": "STOP"}`); !reflect.DeepEqual(got, want) {
		t.Errorf("STOP event = %v", ev)
	}
	if _, ok := ev["timestamp"].(map[string]any)["microseconds"].(json.Number); !ok {
		t.Errorf("STOP event timestamp = %v", ev["timestamp"])
	}

	c.Send(`{"execute": "quit"}`)
	if r := c.Reply(); !reflect.DeepEqual(r, map[string]any{"return": map[string]any{}}) {
		t.Errorf("quit: %v", r)
	}
	ev = c.Event("SHUTDOWN", time.Second)
	want := decode(t, `{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}`)
	if got := Normalize(ev); !reflect.DeepEqual(got, want) {
		t.Errorf("SHUTDOWN event = %v, want %v", got, want)
	}
	c.WaitClosed(5 * time.Second)
}
