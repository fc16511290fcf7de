package qtool

import (
	"encoding/json"
	"testing"
)

// TestJSONSingleQuotes: json: filenames in QEMU's dialect (single-quoted
// strings, \' escapes, as iotests 089 and 150 write them) parse as QEMU's
// parser takes them; malformed ones stay refused.
func TestJSONSingleQuotes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want string // "" : refused
	}{
		{`{ 'driver': 'null-co', 'size': 1048576, 'read-zeroes': true }`, `{"driver":"null-co","read-zeroes":true,"size":1048576}`},
		{`{"a": 'b"c', 'x\'y': "d\'e", "f": "g\"h"}`, `{"a":"b\"c","f":"g\"h","x'y":"d'e"}`},
		{`{'a': {'b': ['c', 'd\\']}}`, `{"a":{"b":["c","d\\"]}}`},
		{`{'a': 'b}`, ""},
		{`{'a' 'b'}`, ""},
		{`{a: 'b'}`, ""},
	} {
		var m map[string]any
		err := json.Unmarshal([]byte(standardQuotes(c.in)), &m)
		if c.want == "" {
			if err == nil {
				t.Errorf("%s: parsed as %v, want refused", c.in, m)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got, _ := json.Marshal(m); string(got) != c.want {
			t.Errorf("%s: %s, want %s", c.in, got, c.want)
		}
	}
	if _, err := ParseJSONOptions(`{ 'driver': 'null-co', 'size': 1048576 }`); err != nil {
		t.Errorf("ParseJSONOptions: %v", err)
	}
}

// FuzzStandardQuotes: standard JSON passes unchanged in meaning (the same
// value decoded), and nothing panics.
func FuzzStandardQuotes(f *testing.F) {
	for _, s := range []string{`{"a":"b"}`, `{'a':'b'}`, `{"a":"\u00e9\n\"'"}`, `'\'`, `"\`, `'`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := standardQuotes(s)
		var a, b any
		if json.Unmarshal([]byte(s), &a) != nil {
			return
		}
		if err := json.Unmarshal([]byte(out), &b); err != nil {
			t.Fatalf("%q: standard JSON rewritten to %q: %v", s, out, err)
		}
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("%q: %s became %s", s, ja, jb)
		}
	})
}
