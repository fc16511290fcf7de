package monitor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
)

// schemaOf runs query-qmp-schema and indexes the reply by name.
func schemaOf(t *testing.T, c *conn) map[string]map[string]any {
	t.Helper()
	var r struct{ Return []map[string]any }
	dec := json.NewDecoder(strings.NewReader(run(c, `{"execute":"query-qmp-schema"}`)))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil || len(r.Return) == 0 {
		t.Fatalf("query-qmp-schema: %v %v", r, err)
	}
	s := map[string]map[string]any{}
	for _, e := range r.Return {
		name := e["name"].(string)
		if _, dup := s[name]; dup {
			t.Errorf("schema entity %q twice", name)
		}
		s[name] = e
	}
	return s
}

func decodeReply(t *testing.T, reply string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(reply))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s: %v", reply, err)
	}
	return m
}

// TestSchemaCoversCommandsAndEvents: every command query-commands lists
// and every event minivmm emits is in the schema, and every type the
// schema names is there, named by number unless builtin, as in QEMU.
func TestSchemaCoversCommandsAndEvents(t *testing.T) {
	c := bareConn(t, true)
	s := schemaOf(t, c)
	var cmds struct{ Return []struct{ Name string } }
	json.Unmarshal([]byte(run(c, `{"execute":"query-commands"}`)), &cmds)
	if len(cmds.Return) != len(commands) {
		t.Fatalf("query-commands lists %d, the table has %d", len(cmds.Return), len(commands))
	}
	for _, cmd := range cmds.Return {
		if e := s[cmd.Name]; e == nil || e["meta-type"] != "command" {
			t.Errorf("command %s: schema has %v", cmd.Name, e)
		}
	}
	for _, ev := range []string{"STOP", "RESUME", "SHUTDOWN", "POWERDOWN", "RESET", "BLOCK_IMAGE_CORRUPTED", "BLOCK_IO_ERROR"} {
		if e := s[ev]; e == nil || e["meta-type"] != "event" {
			t.Errorf("event %s: schema has %v", ev, e)
		}
	}
	builtins := []string{"str", "int", "bool", "number", "null", "any"}
	for name, e := range s {
		switch e["meta-type"] {
		case "command", "event":
			if slices.Contains(builtins, name) {
				t.Errorf("%s is named like a builtin", name)
			}
		case "builtin":
			if !slices.Contains(builtins, name) {
				t.Errorf("builtin %q", name)
			}
		case "array":
			if name != "["+e["element-type"].(string)+"]" {
				t.Errorf("array %q of %v", name, e["element-type"])
			}
		default:
			if _, err := strconv.Atoi(name); err != nil {
				t.Errorf("type %q is not masked as a number", name)
			}
		}
		for _, ref := range typeRefs(e) {
			if s[ref] == nil {
				t.Errorf("%s refers to %q, which the schema lacks", name, ref)
			}
		}
	}
	if e := s["0"]; e["meta-type"] != "object" || len(e["members"].([]any)) != 0 {
		t.Errorf(`"0" is %v, want the empty object`, e)
	}
	if s["human-monitor-command"]["ret-type"] != "str" {
		t.Errorf("human-monitor-command returns %v", s["human-monitor-command"]["ret-type"])
	}
	if _, oob := s["query-status"]["allow-oob"]; oob {
		t.Errorf("query-status: allow-oob given; QEMU gives it only where true")
	}
}

func typeRefs(e map[string]any) []string {
	var refs []string
	for _, k := range []string{"arg-type", "ret-type", "element-type"} {
		if r, ok := e[k].(string); ok {
			refs = append(refs, r)
		}
	}
	for _, k := range []string{"members", "variants"} {
		list, _ := e[k].([]any)
		for _, m := range list {
			if r, ok := m.(map[string]any)["type"].(string); ok {
				refs = append(refs, r)
			}
		}
	}
	return refs
}

// sample is a value of schema type name, for arguments that must pass
// the type check.
func sample(s map[string]map[string]any, name string) any {
	e := s[name]
	switch e["meta-type"] {
	case "builtin":
		return map[string]any{"str": "x", "int": json.Number("0"), "bool": false, "number": json.Number("0.5"), "null": nil, "any": "x"}[name]
	case "enum":
		return e["values"].([]any)[0]
	case "array":
		return []any{}
	case "alternate":
		return sample(s, e["members"].([]any)[0].(map[string]any)["type"].(string))
	}
	// An object: its required members, and a union's first variant's.
	obj := map[string]any{}
	fill := func(e map[string]any) {
		members, _ := e["members"].([]any)
		for _, m := range members {
			m := m.(map[string]any)
			if _, optional := m["default"]; !optional {
				obj[m["name"].(string)] = sample(s, m["type"].(string))
			}
		}
	}
	fill(e)
	if tag, ok := e["tag"].(string); ok {
		for _, v := range e["variants"].([]any) {
			if v := v.(map[string]any); v["case"] == obj[tag] {
				fill(s[v["type"].(string)])
			}
		}
	}
	return obj
}

// wrongFor is a value of the wrong JSON type for schema type name and
// the word QEMU's error names the expected type by.
func wrongFor(s map[string]map[string]any, name string) (any, string) {
	e := s[name]
	switch e["meta-type"] {
	case "builtin":
		switch name {
		case "str":
			return json.Number("1"), "string"
		case "int":
			return "1", "integer"
		case "bool":
			return "1", "boolean"
		case "number":
			return "1", "number"
		}
		return nil, ""
	case "enum":
		return json.Number("1"), "string"
	case "array":
		return "1", "array"
	case "object":
		return "1", "object"
	}
	return nil, ""
}

func argsJSON(m map[string]any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.Encode(m)
	return strings.TrimSpace(b.String())
}

// TestSchemaMatchesDispatcher walks the schema and sends every command the
// arguments it declares: an extra argument is refused as unexpected, a
// missing required one as missing, each argument of the wrong type with
// the type the schema gives, so what the schema says is what the
// dispatcher checks.
func TestSchemaMatchesDispatcher(t *testing.T) {
	c := bareConn(t, true)
	s := schemaOf(t, c)
	for name, e := range s {
		if e["meta-type"] != "command" || name == "qmp_capabilities" {
			continue
		}
		arg := s[e["arg-type"].(string)]
		if arg["tag"] != nil || name == "device_add" || name == "object-add" {
			continue // blockdev-add: TestSchemaBlockdevOptions; device_add, object-add take their type's properties
		}
		members := arg["members"].([]any)
		valid := map[string]any{}
		for _, m := range members {
			m := m.(map[string]any)
			if _, optional := m["default"]; !optional {
				valid[m["name"].(string)] = sample(s, m["type"].(string))
			}
		}
		send := func(args map[string]any) string {
			return run(c, fmt.Sprintf(`{"execute":%q,"arguments":%s}`, name, argsJSON(args)))
		}
		extra := map[string]any{"x-unexpected": json.Number("1")}
		for k, v := range valid {
			extra[k] = v
		}
		if got, want := send(extra), `{"error": {"class": "GenericError", "desc": "Parameter 'x-unexpected' is unexpected"}}`; got != want {
			t.Errorf("%s with an extra argument: %s, want %s", name, got, want)
		}
		for _, m := range members {
			m := m.(map[string]any)
			mname := m["name"].(string)
			if _, optional := m["default"]; !optional {
				without := map[string]any{"x-unexpected": true}
				for k, v := range valid {
					if k != mname {
						without[k] = v
					}
				}
				if got, want := send(without), fmt.Sprintf(`{"error": {"class": "GenericError", "desc": "Parameter '%s' is missing"}}`, mname); got != want {
					t.Errorf("%s without %s: %s, want %s", name, mname, got, want)
				}
			}
			bad, word := wrongFor(s, m["type"].(string))
			if word == "" {
				continue
			}
			args := map[string]any{mname: bad}
			for k, v := range valid {
				if k != mname {
					args[k] = v
				}
			}
			if got, want := send(args), fmt.Sprintf(`{"error": {"class": "GenericError", "desc": "Invalid parameter type for '%s', expected: %s"}}`, mname, word); got != want {
				t.Errorf("%s with %s of the wrong type: %s, want %s", name, mname, got, want)
			}
		}
	}
}

// TestSchemaBlockdevOptions: blockdev-add's union has a variant for every
// driver, and each option it declares reaches the block layer's checks
// (an unexpected one is refused, a declared one of the wrong type is
// refused for its type, not as unexpected).
func TestSchemaBlockdevOptions(t *testing.T) {
	c := bareConn(t, true)
	s := schemaOf(t, c)
	u := s[s["blockdev-add"]["arg-type"].(string)]
	if u["tag"] != "driver" {
		t.Fatalf("blockdev-add takes %v", u)
	}
	if s[s["blockdev-reopen"]["arg-type"].(string)]["members"].([]any)[0].(map[string]any)["type"] != "["+s["blockdev-add"]["arg-type"].(string)+"]" {
		t.Errorf("blockdev-reopen's options are not a list of blockdev-add's arguments")
	}
	variants := u["variants"].([]any)
	if len(variants) < 4 {
		t.Fatalf("variants %v", variants)
	}
	for _, v := range variants {
		v := v.(map[string]any)
		driver := v["case"].(string)
		opts := map[string]any{"driver": driver, "node-name": "n0", "x-unexpected": json.Number("1")}
		got := run(c, fmt.Sprintf(`{"execute":"blockdev-add","arguments":%s}`, argsJSON(opts)))
		if !strings.Contains(got, "Parameter 'x-unexpected' is unexpected") && !strings.Contains(got, "is missing") {
			t.Errorf("%s with an unexpected option: %s", driver, got)
		}
		members := append(slices.Clone(u["members"].([]any)), s[v["type"].(string)]["members"].([]any)...)
		for _, m := range members {
			m := m.(map[string]any)
			mname := m["name"].(string)
			if mname == "driver" {
				continue
			}
			bad, word := wrongFor(s, m["type"].(string))
			if word == "" {
				continue // alternates (children) take several types
			}
			opts := map[string]any{"driver": driver, mname: bad}
			got := run(c, fmt.Sprintf(`{"execute":"blockdev-add","arguments":%s}`, argsJSON(opts)))
			if strings.Contains(got, "is unexpected") {
				t.Errorf("%s: the schema declares %s, the block layer refuses it: %s", driver, mname, got)
			}
		}
	}
}

// conforms checks v against schema type name, as a client that trusts
// the schema would read it.
func conforms(s map[string]map[string]any, name string, v any, path string) error {
	e := s[name]
	if e == nil {
		return fmt.Errorf("%s: no type %q", path, name)
	}
	switch e["meta-type"] {
	case "builtin":
		ok := false
		switch name {
		case "str":
			_, ok = v.(string)
		case "int":
			n, isNum := v.(json.Number)
			_, err := strconv.ParseInt(string(n), 10, 64)
			ok = isNum && err == nil
		case "number":
			_, ok = v.(json.Number)
		case "bool":
			_, ok = v.(bool)
		case "null":
			ok = v == nil
		case "any":
			ok = true
		}
		if !ok {
			return fmt.Errorf("%s: %v is not a %s", path, v, name)
		}
	case "enum":
		if !slices.Contains(e["values"].([]any), v) {
			return fmt.Errorf("%s: %v is not one of %v", path, v, e["values"])
		}
	case "array":
		list, ok := v.([]any)
		if !ok {
			return fmt.Errorf("%s: %v is not an array", path, v)
		}
		for i, x := range list {
			if err := conforms(s, e["element-type"].(string), x, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case "alternate":
		for _, m := range e["members"].([]any) {
			if conforms(s, m.(map[string]any)["type"].(string), v, path) == nil {
				return nil
			}
		}
		return fmt.Errorf("%s: %v fits no branch of %s", path, v, name)
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("%s: %v is not an object", path, v)
		}
		members := e["members"].([]any)
		if tag, ok := e["tag"].(string); ok {
			for _, vr := range e["variants"].([]any) {
				vr := vr.(map[string]any)
				if vr["case"] == obj[tag] {
					members = append(slices.Clone(members), s[vr["type"].(string)]["members"].([]any)...)
				}
			}
		}
		known := map[string]bool{}
		for _, m := range members {
			m := m.(map[string]any)
			mname := m["name"].(string)
			known[mname] = true
			x, present := obj[mname]
			if !present {
				if _, optional := m["default"]; !optional {
					return fmt.Errorf("%s: member %s missing", path, mname)
				}
				continue
			}
			if err := conforms(s, m["type"].(string), x, path+"."+mname); err != nil {
				return err
			}
		}
		for k := range obj {
			if !known[k] {
				return fmt.Errorf("%s: member %s is not in the schema", path, k)
			}
		}
	}
	return nil
}

// TestRepliesConformToSchema: what the commands that take no arguments
// answer is what the schema says they answer, query-qmp-schema included.
func TestRepliesConformToSchema(t *testing.T) {
	c := bareConn(t, true)
	s := schemaOf(t, c)
	c.mon.srv.vm.SetName("guest0")
	// A node and a backend, so that the block queries have members to
	// check.
	if r := run(c, `{"execute":"blockdev-add","arguments":{"driver":"null-co","node-name":"n0","size":1024}}`); r != `{"return": {}}` {
		t.Fatal(r)
	}
	n0, _ := c.mon.srv.graph.Node("n0")
	if _, err := c.mon.srv.graph.Attach("d0", n0, block.Perm{}); err != nil {
		t.Fatal(err)
	}
	for name, e := range s {
		if e["meta-type"] != "command" || e["arg-type"] != "0" {
			continue
		}
		switch name {
		case "quit", "system_powerdown", "stop", "cont", "system_reset", "qmp_capabilities",
			"nbd-server-stop": // an error without a server, as in QEMU
			continue
		}
		reply := decodeReply(t, run(c, fmt.Sprintf(`{"execute":%q}`, name)))
		ret, ok := reply["return"]
		if !ok {
			t.Errorf("%s: %v", name, reply)
			continue
		}
		if err := conforms(s, e["ret-type"].(string), ret, name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, in := range []string{
		`{"execute":"human-monitor-command","arguments":{"command-line":"info status"}}`,
		`{"execute":"query-command-line-options","arguments":{"option":"mon"}}`,
		`{"execute":"query-named-block-nodes","arguments":{"flat":true}}`,
	} {
		reply := decodeReply(t, run(c, in))
		var req struct{ Execute string }
		json.Unmarshal([]byte(in), &req)
		if err := conforms(s, s[req.Execute]["ret-type"].(string), reply["return"], req.Execute); err != nil {
			t.Errorf("%s: %v", in, err)
		}
	}
}

// TestEventsConformToSchema: the events the VM emits carry the data the
// schema declares.
func TestEventsConformToSchema(t *testing.T) {
	c := bareConn(t, true)
	s := schemaOf(t, c)
	vm := c.mon.srv.vm
	type event struct {
		name string
		data Obj
	}
	var got []event
	vm.emit = func(ev string, data Obj) { got = append(got, event{ev, data}) }
	vm.Stop()
	vm.Reset()
	vm.Powerdown()
	if then := vm.Cont(); then != nil {
		then()
	}
	vm.Shutdown("host-signal")
	for _, err := range []error{unix.EIO, unix.ENOSPC, errors.New("no errno")} {
		got = append(got, event{"BLOCK_IO_ERROR", writeBackErrorData(block.WriteBackError{Device: "d0", Node: "n0", Err: err})})
	}
	names := []string{}
	for _, ev := range got {
		names = append(names, ev.name)
		e := s[ev.name]
		if e == nil {
			t.Errorf("event %s is not in the schema", ev.name)
			continue
		}
		var data any = map[string]any{}
		if ev.data != nil {
			var b strings.Builder
			encode(&b, ev.data, false, 0)
			dec := json.NewDecoder(strings.NewReader(b.String()))
			dec.UseNumber()
			dec.Decode(&data)
		}
		if err := conforms(s, e["arg-type"].(string), data, ev.name); err != nil {
			t.Errorf("%v", err)
		}
	}
	if want := []string{"STOP", "RESET", "POWERDOWN", "RESUME", "SHUTDOWN", "BLOCK_IO_ERROR", "BLOCK_IO_ERROR", "BLOCK_IO_ERROR"}; !slices.Equal(names, want) {
		t.Errorf("events %v, want %v", names, want)
	}
}

// FuzzCommandArguments sends every command (but the block layer's, which
// block's own fuzzers cover) arbitrary arguments: no panic, every reply a
// "return" or an "error", and a "return" conforms to the schema.
func FuzzCommandArguments(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"command-line":"info block -n x"}`, `{"option":"mon"}`, `{"enable":["oob",1]}`,
		`{"fdset-id":1,"fd":-1}`, `{"flat":true,"x":null}`, `{"command-line":"help info"}`, `{"fdname":"0x"}`,
		`{"node":"n","target":"t","bitmaps":["a",{"node":"n","name":"b"},3,{"node":1}]}`,
		`{"node":"n","name":"b","granularity":4294967296,"persistent":true}`,
	} {
		f.Add(uint8(0), s)
	}
	names := slices.Sorted(maps.Keys(commands))
	names = slices.DeleteFunc(names, func(n string) bool { return strings.HasPrefix(n, "blockdev-") })
	f.Fuzz(func(t *testing.T, pick uint8, args string) {
		c := bareConn(t, true)
		name := names[int(pick)%len(names)]
		reply := run(c, fmt.Sprintf(`{"execute":%q,"arguments":%s}`, name, args))
		dec := json.NewDecoder(strings.NewReader(reply))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("%s: %v", reply, err)
		}
		if ret, ok := m["return"]; ok && name != "qmp_capabilities" {
			s := schemaOf(t, bareConn(t, true))
			if err := conforms(s, s[name]["ret-type"].(string), ret, name); err != nil {
				t.Fatalf("%s %s: %v", name, args, err)
			}
		} else if _, isErr := m["error"]; !ok && !isErr {
			t.Fatalf("%s %s: %s", name, args, reply)
		}
	})
}
