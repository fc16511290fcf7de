package monitor

import (
	"encoding/json"
	"strings"
	"testing"

	"minivmm/block"
	"minivmm/qemuopen"
)

// bareConn is a connection without a socket, for running messages through
// the dispatcher directly.
func bareConn(t testing.TB, negotiated bool) *conn {
	reg := qemuopen.New(qemuopen.Config{})
	t.Cleanup(reg.CloseAll)
	srv := NewServer(reg, block.NewGraph(reg), NewVM(false))
	m := &Monitor{srv: srv, named: map[string]int{}, listener: newListener()}
	c := &conn{mon: m, owner: reg.NewOwner()}
	c.negotiated.Store(negotiated)
	return c
}

func run(c *conn, input string) string {
	var b strings.Builder
	encode(&b, c.execute(&call{conn: c}, []byte(input)), false, 0)
	return b.String()
}

func TestExecuteProtocolErrors(t *testing.T) {
	tests := []struct {
		negotiated bool
		in, want   string
	}{
		{false, `{"execute":"query-status"}`, `{"error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`},
		{false, `{"execute":"nosuch","id":1}`, `{"id": 1, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`},
		{false, `{"execute":"qmp_capabilities","id":"x"}`, `{"return": {}, "id": "x"}`},
		{true, `{"execute":"qmp_capabilities"}`, `{"error": {"class": "CommandNotFound", "desc": "Capabilities negotiation is already complete, command ignored"}}`},
		{true, `{"execute":"nosuch"}`, `{"error": {"class": "CommandNotFound", "desc": "The command nosuch has not been found"}}`},
		{true, `[]`, `{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}`},
		{true, `1`, `{"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}`},
		{true, `{"execute":"stop","foo":1}`, `{"error": {"class": "GenericError", "desc": "QMP input member 'foo' is unexpected"}}`},
		{true, `{"execute":1}`, `{"error": {"class": "GenericError", "desc": "QMP input member 'execute' must be a string"}}`},
		{true, `{"execute":"stop","arguments":[]}`, `{"error": {"class": "GenericError", "desc": "QMP input member 'arguments' must be an object"}}`},
		{true, `{"arguments":{}}`, `{"error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"}}`},
		{true, `{"execute":"query-status","id":{"b":[1,"\u00e9"],"a":null}}`, `{"return": {"status": "running", "running": true}, "id": {"a": null, "b": [1, "\u00E9"]}}`},
		{true, `{"execute":"query-status","arguments":{"x":1}}`, `{"error": {"class": "GenericError", "desc": "Parameter 'x' is unexpected"}}`},
		{true, `{"execute":"remove-fd"}`, `{"error": {"class": "GenericError", "desc": "Parameter 'fdset-id' is missing"}}`},
		{true, `{"execute":"remove-fd","arguments":{"fdset-id":"1"}}`, `{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'fdset-id', expected: integer"}}`},
		{true, `{"execute":"remove-fd","arguments":{"fdset-id":9223372036854775808}}`, `{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'fdset-id', expected: integer"}}`},
		{true, `{"execute":"remove-fd","arguments":{"fdset-id":1.5}}`, `{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'fdset-id', expected: integer"}}`},
		{true, `{"execute":"remove-fd","arguments":{"fdset-id":7}}`, `{"error": {"class": "GenericError", "desc": "File descriptor named 'fdset-id:7' not found"}}`},
		{true, `{"execute":"remove-fd","arguments":{"fdset-id":1,"fd":999}}`, `{"error": {"class": "GenericError", "desc": "File descriptor named 'fdset-id:1, fd:999' not found"}}`},
		{true, `{"execute":"add-fd","arguments":{"fdset-id":1}}`, `{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}}`},
		{true, `{"execute":"add-fd","arguments":{"fdset-id":"x"}}`, `{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'fdset-id', expected: integer"}}`},
		{true, `{"execute":"getfd","arguments":{"fdname":"x"}}`, `{"error": {"class": "GenericError", "desc": "No file descriptor supplied via SCM_RIGHTS"}}`},
		{true, `{"execute":"closefd","arguments":{"fdname":"x"}}`, `{"error": {"class": "GenericError", "desc": "File descriptor named 'x' not found"}}`},
		{true, `{"execute":"query-fdsets"}`, `{"return": []}`},
		{true, `{"execute":"query-version"}`, `{"return": {"qemu": {"micro": 0, "minor": 1, "major": 9}, "package": "minivmm 0.1.0"}}`},
	}
	for _, tc := range tests {
		if got := run(bareConn(t, tc.negotiated), tc.in); got != tc.want {
			t.Errorf("%s (negotiated %v)\n got %s\nwant %s", tc.in, tc.negotiated, got, tc.want)
		}
	}
}

func TestRunStateCommands(t *testing.T) {
	c := bareConn(t, true)
	var events []string
	c.mon.srv.vm.emit = func(ev string, _ Obj) { events = append(events, ev) }
	status := func() string {
		var r struct{ Return struct{ Status string } }
		json.Unmarshal([]byte(run(c, `{"execute":"query-status"}`)), &r)
		return r.Return.Status
	}
	steps := []struct {
		cmd, status, event string
	}{
		{"stop", "paused", "STOP"},
		{"stop", "paused", ""},
		{"cont", "running", "RESUME"},
		{"cont", "running", ""},
	}
	for _, s := range steps {
		events = nil
		run(c, `{"execute":"`+s.cmd+`"}`)
		if got := status(); got != s.status {
			t.Errorf("after %s: status %s, want %s", s.cmd, got, s.status)
		}
		if got := strings.Join(events, ","); got != s.event {
			t.Errorf("after %s: events %q, want %q", s.cmd, got, s.event)
		}
	}
	pre := bareConn(t, true)
	pre.mon.srv.vm = NewVM(true)
	if got := run(pre, `{"execute":"query-status"}`); got != `{"return": {"status": "prelaunch", "running": false}}` {
		t.Errorf("prelaunch: %s", got)
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"a\"b\\c":      `"a\"b\\c"`,
		"\n\t\x01\x7f": `"\n\t\u0001\u007F"`,
		"é😀":           `"\u00E9\uD83D\uDE00"`,
	} {
		var b strings.Builder
		quote(&b, in)
		if b.String() != want {
			t.Errorf("quote(%q) = %s, want %s", in, b.String(), want)
		}
	}
}

// FuzzQMPInput runs arbitrary bytes through the framer and the dispatcher:
// no panic, and every reply is one JSON object with "return" or "error".
func FuzzQMPInput(f *testing.F) {
	for _, s := range []string{
		`{"execute":"qmp_capabilities"}{"execute":"query-status","id":[1]}`,
		`{"execute":"remove-fd","arguments":{"fdset-id":1,"fd":2}}`,
		`{"execute": }`, `abc`, `}`, `[[[[`, `'single'`, "\xff{\"x\":1}",
		`{"execute":"add-fd","arguments":{"fdset-id":-1,"opaque":"o"}}`,
		`{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}`,
		`{"exec-oob":"query-status","id":1}{"exec-oob":"nosuch"}{"exec-oob":1}`,
		`{"exec-oob":"stop","execute":"stop"}{"exec-oob":"qmp_capabilities","arguments":{}}`,
	} {
		f.Add([]byte(s), true, false)
		f.Add([]byte(s), true, true)
	}
	f.Fuzz(func(t *testing.T, input []byte, negotiated, oob bool) {
		c := bareConn(t, negotiated)
		c.oob.Store(oob)
		framer := NewFramer(1<<16, 64)
		for _, fr := range framer.Feed(input) {
			var reply Obj
			if fr.Err != nil {
				reply = errorReply(genericError("%s", fr.Err.Error()), nil)
			} else {
				reply = c.execute(&call{conn: c}, fr.Data)
			}
			var b strings.Builder
			encode(&b, reply, false, 0)
			var v map[string]any
			if err := json.Unmarshal([]byte(b.String()), &v); err != nil {
				t.Fatalf("reply is not JSON: %s: %v", b.String(), err)
			}
			if _, ok := v["return"]; !ok {
				if _, ok := v["error"]; !ok {
					t.Fatalf("reply has neither return nor error: %s", b.String())
				}
			}
		}
	})
}
