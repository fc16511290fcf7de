package jsonval

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestDecode(t *testing.T) {
	tests := []struct {
		in      string
		want    any
		wantErr string
	}{
		{`{"a": 1}`, map[string]any{"a": json.Number("1")}, ""},
		{`{'execute': 'query-status'}`, map[string]any{"execute": "query-status"}, ""},
		{`{'a': 'it\'s "x"', "b": "'"}`, map[string]any{"a": `it's "x"`, "b": "'"}, ""},
		{`9223372036854775807`, json.Number("9223372036854775807"), ""},
		{`{"a": 1, "a": 2}`, nil, "duplicate key"},
		{`{"execute": }`, nil, "expecting value"},
		{`{"execute" }`, nil, "missing : in object pair"},
		{`abc`, nil, "invalid keyword 'abc'"},
		{`}`, nil, "expecting value"},
		{`{"a":`, nil, "premature EOI"},
		{`{} {}`, nil, "Expecting at most one JSON value"},
		{`12abc`, nil, "Expecting at most one JSON value"},
	}
	for _, tc := range tests {
		got, err := Decode([]byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("Decode(%s) error = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Decode(%s) = %#v, %v; want %#v", tc.in, got, err, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"a":[1,{"b":null}]}`, `{'a':'\''}`, `"x`, `'`, `{"a":1,"a":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := Decode(data)
		if err == nil {
			// What decodes must survive a round trip through encoding/json.
			if _, err := json.Marshal(v); err != nil {
				t.Fatalf("decoded %q to an unencodable %#v", data, v)
			}
		}
	})
}
