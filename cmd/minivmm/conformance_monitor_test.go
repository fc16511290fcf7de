package main

// Conformance of the introspection and human-monitor commands: the same
// scripts against qemu-system-x86_64 -machine none and minivmm (see
// conformance_test.go). Replies that describe QEMU's build (its machines,
// KVM, its whole schema) are checked for what minivmm must share with
// them and then taken out of the comparison, each step saying how.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"minivmm/cmdline"
	"minivmm/internal/fdtest"
)

func hmpStep(name, line string) confStep {
	b, _ := json.Marshal(line)
	return confStep{name: "HMP " + name, send: `{"execute": "human-monitor-command", "arguments": {"command-line": ` + string(b) + `}}`}
}

func TestConformanceIntrospection(t *testing.T) {
	fdtest.Check(t)
	// QEMU's schema, read in its run (which plays first), for minivmm's
	// run to be checked against.
	var qemuSchema map[string]map[string]any
	schemaStep := confStep{
		name: "query-qmp-schema: minivmm's arguments are QEMU's",
		send: `{"execute": "query-qmp-schema"}`,
		check: func(t *testing.T, r *confRun, replies []map[string]any) {
			s := indexSchema(t, replies[0])
			if r.name == "qemu" {
				qemuSchema = s
			} else {
				compareSchemas(t, qemuSchema, s)
			}
			replies[0]["return"] = "(checked)"
		},
	}
	machinesStep := confStep{
		name: "query-machines: the 'none' machine",
		send: `{"execute": "query-machines"}`,
		check: func(t *testing.T, r *confRun, replies []map[string]any) {
			list, _ := replies[0]["return"].([]any)
			var keep []any
			for _, m := range list {
				if m.(map[string]any)["name"] == "none" {
					keep = append(keep, m)
				}
			}
			replies[0]["return"] = keep
		},
	}
	kvmStep := confStep{
		name: "query-kvm: not enabled",
		send: `{"execute": "query-kvm"}`,
		check: func(t *testing.T, r *confRun, replies []map[string]any) {
			// present is whether the binary was built with KVM: QEMU was,
			// minivmm has no KVM at all.
			ret, _ := replies[0]["return"].(map[string]any)
			if ret["enabled"] != false {
				t.Errorf("%s: query-kvm %v", r.name, ret)
			}
			delete(ret, "present")
		},
	}
	// -drive: QEMU lists more keys than minivmm takes; its list, cut to
	// the keys minivmm lists (each of which QEMU must list), is compared
	// as it stands: names, help texts, types and order.
	var driveKeys []string
	driveStep := confStep{
		name: "query-command-line-options drive: minivmm's keys as QEMU lists them",
		send: `{"execute": "query-command-line-options", "arguments": {"option": "drive"}}`,
		check: func(t *testing.T, r *confRun, replies []map[string]any) {
			ret, _ := replies[0]["return"].([]any)
			if len(ret) != 1 {
				t.Fatalf("%s: %s", r.name, confShow(replies))
			}
			params := ret[0].(map[string]any)["parameters"].([]any)
			if r.proc != nil {
				for _, p := range params {
					driveKeys = append(driveKeys, p.(map[string]any)["name"].(string))
				}
				return
			}
			// QEMU plays first: keep what minivmm will list, by
			// minivmm's table.
			o, err := cmdline.LookupOption("drive")
			if err != nil {
				t.Fatal(err)
			}
			var keep []any
			for _, p := range params {
				for _, mine := range o.Params {
					if p.(map[string]any)["name"] == mine.Name {
						keep = append(keep, p)
						break
					}
				}
			}
			ret[0].(map[string]any)["parameters"] = keep
		},
	}
	steps := []confStep{
		{name: "negotiate", send: `{"execute": "qmp_capabilities"}`},
		schemaStep,
		driveStep,
		{name: "query-name", send: `{"execute": "query-name"}`},
		{name: "query-name, unexpected argument", send: `{"execute": "query-name", "arguments": {"x": 1}}`},
		kvmStep,
		machinesStep,
		{name: "query-command-line-options mon", send: `{"execute": "query-command-line-options", "arguments": {"option": "mon"}}`},
		{name: "query-command-line-options msg", send: `{"execute": "query-command-line-options", "arguments": {"option": "msg"}}`},
		{name: "query-command-line-options name", send: `{"execute": "query-command-line-options", "arguments": {"option": "name"}}`},
		{name: "query-command-line-options memory", send: `{"execute": "query-command-line-options", "arguments": {"option": "memory"}}`},
		{name: "query-command-line-options device", send: `{"execute": "query-command-line-options", "arguments": {"option": "device"}}`},
		{name: "query-command-line-options add-fd", send: `{"execute": "query-command-line-options", "arguments": {"option": "add-fd"}}`},
		{name: "query-command-line-options nosuch", send: `{"execute": "query-command-line-options", "arguments": {"option": "nosuch"}}`},
		{name: "query-command-line-options number", send: `{"execute": "query-command-line-options", "arguments": {"option": 1}}`},
		{name: "system_reset", send: `{"execute": "system_reset"}`},
		{name: "system_reset, unexpected argument", send: `{"execute": "system_reset", "arguments": {"x": 1}}`},
		{name: "human-monitor-command without command-line", send: `{"execute": "human-monitor-command"}`},
		{name: "human-monitor-command, cpu-index", send: `{"execute": "human-monitor-command", "arguments": {"command-line": "info status", "cpu-index": 0}}`},
		{name: "human-monitor-command, number", send: `{"execute": "human-monitor-command", "arguments": {"command-line": 1}}`},
		hmpStep("info status", "info status"),
		hmpStep("info status, spaces", "  info   status  "),
		hmpStep("info name", "info name"),
		hmpStep("info qtree", "info qtree"),
		hmpStep("info block", "info block"),
		hmpStep("info block -n", "info block -n"),
		hmpStep("info block node", "info block f1"),
		hmpStep("info block nosuch", "info block nosuch"),
		hmpStep("info block -x", "info block -x"),
		hmpStep("info block a b", "info block a b"),
		hmpStep("empty line", ""),
		hmpStep("unknown", "nosuch"),
		hmpStep("unknown, leading spaces", "  nosuch"),
		hmpStep("unknown info", "info nosuch"),
		hmpStep("extraneous", "stop foo"),
		hmpStep("extraneous, alias", "s foo"),
		hmpStep("extraneous, leading spaces", "  stop x"),
		hmpStep("extraneous info", "info  status x"),
		hmpStep("help stop", "help stop"),
		hmpStep("help quit", "help quit"),
		hmpStep("help cont", "help cont"),
		hmpStep("help help", "help help"),
		hmpStep("help system_powerdown", "help system_powerdown"),
		hmpStep("help system_reset", "help system_reset"),
		hmpStep("help info status", "help info status"),
		hmpStep("help info name", "help info name"),
		hmpStep("help info version", "help info version"),
		hmpStep("help info qtree", "help info qtree"),
		hmpStep("help info nosuch", "help info nosuch"),
		hmpStep("help nosuch", "help nosuch"),
		hmpStep("help stop x", "help stop x"),
		hmpStep("h", "h"),
		hmpStep("stop", "stop"),
		hmpStep("info status, paused", "info status"),
		hmpStep("stop again", "s"),
		hmpStep("cont", "c"),
		hmpStep("system_reset", "system_reset"),
		{name: "HMP quit", send: `{"execute": "human-monitor-command", "arguments": {"command-line": "quit"}}`, kind: confQuitStep},
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "b.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	runConformance(t, nil, []string{"-name", "vm1",
		"-blockdev", "driver=file,node-name=f1,filename=" + img + ",read-only=on",
	}, steps)
	if len(driveKeys) < 8 {
		t.Errorf("minivmm lists %v for -drive", driveKeys)
	}
}

func indexSchema(t *testing.T, reply map[string]any) map[string]map[string]any {
	t.Helper()
	list, ok := reply["return"].([]any)
	if !ok {
		t.Fatalf("query-qmp-schema: %v", reply)
	}
	s := map[string]map[string]any{}
	for _, e := range list {
		e := e.(map[string]any)
		s[e["name"].(string)] = e
	}
	return s
}

// compareSchemas checks that every command and event minivmm declares is
// QEMU's, with the same arguments (each of minivmm's is QEMU's, with the
// same JSON type, optional where QEMU's is) and the same event members.
func compareSchemas(t *testing.T, qemu, mine map[string]map[string]any) {
	t.Helper()
	if qemu == nil {
		t.Fatal("QEMU's schema was not read")
	}
	for name, e := range mine {
		kind := e["meta-type"]
		if kind != "command" && kind != "event" {
			continue
		}
		if strings.HasPrefix(name, "x-") || strings.HasPrefix(name, "X_") {
			continue // minivmm's own, under QEMU's prefix for extensions (x-workload)
		}
		q := qemu[name]
		if q == nil || q["meta-type"] != kind {
			t.Errorf("%s %s: QEMU has %v", kind, name, q)
			continue
		}
		if name == "blockdev-add" || name == "blockdev-reopen" {
			continue // BlockdevOptions: minivmm has four of QEMU's drivers; see TestSchemaBlockdevOptions
		}
		qm := members(qemu, q["arg-type"].(string))
		for mname, m := range members(mine, e["arg-type"].(string)) {
			qa, ok := qm[mname]
			if !ok {
				t.Errorf("%s: argument %s is not QEMU's", name, mname)
				continue
			}
			if jt, qjt := jsonType(mine, m.typ), jsonType(qemu, qa.typ); jt != qjt {
				t.Errorf("%s: %s is %s, QEMU's is %s", name, mname, jt, qjt)
			}
			if m.optional != qa.optional {
				t.Errorf("%s: %s optional %v, QEMU's %v", name, mname, m.optional, qa.optional)
			}
		}
		for qname, qa := range qm {
			if _, ok := members(mine, e["arg-type"].(string))[qname]; !ok && !qa.optional && kind == "command" {
				t.Errorf("%s: QEMU requires %s, minivmm does not declare it", name, qname)
			}
		}
	}
}

type schemaMember struct {
	typ      string
	optional bool
}

func members(s map[string]map[string]any, typ string) map[string]schemaMember {
	out := map[string]schemaMember{}
	list, _ := s[typ]["members"].([]any)
	for _, m := range list {
		m := m.(map[string]any)
		_, opt := m["default"]
		out[m["name"].(string)] = schemaMember{m["type"].(string), opt}
	}
	return out
}

// jsonType is how a type looks on the wire: a builtin's json-type, enum
// (a string from a list), array of X, object or alternate.
func jsonType(s map[string]map[string]any, typ string) string {
	e := s[typ]
	switch e["meta-type"] {
	case "builtin":
		return e["json-type"].(string)
	case "array":
		return "array of " + jsonType(s, e["element-type"].(string))
	case "enum":
		vals := []string{}
		for _, v := range e["values"].([]any) {
			vals = append(vals, v.(string))
		}
		return "enum " + strings.Join(vals, "|")
	}
	return e["meta-type"].(string)
}
