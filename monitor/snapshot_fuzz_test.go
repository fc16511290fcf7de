package monitor

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzTransactionArgs feeds the transaction command's argument check
// (TransactionAction, a union on "type") and the conversion to block
// actions arbitrary JSON: no panic; a refusal is one of QAPI's sentences;
// what passes converts to one block action per QMP action, with the
// names as sent.
func FuzzTransactionArgs(f *testing.F) {
	for _, s := range []string{
		`{"actions":[]}`,
		`{"actions":[{"type":"blockdev-snapshot","data":{"node":"d0","overlay":"ov"}}]}`,
		`{"actions":[{"type":"blockdev-snapshot-sync","data":{"device":"d0","snapshot-file":"/dev/fdset/2","mode":"existing"}},{"type":"abort","data":{}}]}`,
		`{"actions":[{"type":"nope","data":{}}],"properties":{"completion-mode":"grouped"}}`,
		`{"actions":[{"data":{"node":1}}]}`, `{"actions":{}}`, `{"actions":[1,null,"x"]}`,
		`{"actions":[{"type":"abort","data":{"x":1},"y":2}]}`, `{}`,
	} {
		f.Add(s)
	}
	cmd := commands["transaction"]
	f.Fuzz(func(t *testing.T, input string) {
		d := json.NewDecoder(strings.NewReader(input))
		d.UseNumber()
		var raw map[string]any
		if d.Decode(&raw) != nil || raw == nil {
			return
		}
		args, err := checkArgs(cmd.params, raw)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, "Parameter '") && !strings.HasPrefix(msg, "Invalid parameter type for '") {
				t.Fatalf("argument error %q", msg)
			}
			return
		}
		list, err := transactionActions(args)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "Action '") {
				t.Fatalf("transaction error %q", err)
			}
			return
		}
		sent := raw["actions"].([]any)
		if len(list) != len(sent) {
			t.Fatalf("%d actions sent, %d made", len(sent), len(list))
		}
		for i, a := range list {
			m := sent[i].(map[string]any)
			data := m["data"].(map[string]any)
			switch m["type"] {
			case "abort":
				if a.Fail == nil {
					t.Fatalf("action %d: abort without its refusal", i)
				}
			case "blockdev-snapshot":
				if a.Node != data["node"] || a.Overlay != data["overlay"] || a.Sync != nil {
					t.Fatalf("action %d: %+v from %v", i, a, data)
				}
			case "blockdev-snapshot-sync":
				if a.Sync == nil || a.Sync.File != data["snapshot-file"] || a.Sync.Existing != (data["mode"] == "existing") {
					t.Fatalf("action %d: %+v from %v", i, a, data)
				}
			default:
				t.Fatalf("action %d of type %v passed the check", i, m["type"])
			}
		}
	})
}
