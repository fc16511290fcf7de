package cmdline

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestParseBlockdevArg(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want obj
		err  string // checked against QEMU 7.2's -blockdev
	}{
		{in: `{"driver":"file","filename":"/x","size":18446744073709551615,"ro":true,"l":[1,{"a":null}]}`,
			want: obj{"driver": "file", "filename": "/x", "size": json.Number("18446744073709551615"), "ro": true,
				"l": []any{json.Number("1"), obj{"a": nil}}}},
		{in: `{}`, want: obj{}},
		{in: `{"a":1} `, want: obj{"a": json.Number("1")}},
		{in: "null-co,node-name=a", want: obj{"driver": "null-co", "node-name": "a"}},
		{in: "driver=file,file.x=1", want: obj{"driver": "file", "file": obj{"x": "1"}}},
		{in: `{"driver":"null-co","node-name":"a","node-name":"b"}`, err: "JSON parse error, duplicate key"},
		{in: `{"a":{"b":1,"b":2}}`, err: "JSON parse error, duplicate key"},
		{in: `{"driver":"null-co"} x`, err: "Expecting at most one JSON value"},
		{in: `{"driver":"null-co"}{}`, err: "Expecting at most one JSON value"},
		{in: `{"driver":"null-co"`, err: "JSON parse error, premature EOI"},
		{in: `{`, err: "JSON parse error, premature EOI"},
		{in: ` {"driver":"null-co","node-name":"a"}`, err: `Invalid parameter '"node-name":"a"}'`},
		{in: `{"a":}`, err: "JSON parse error, expecting value"},
		{in: "", want: obj{}},
	} {
		got, err := ParseBlockdevArg(tc.in)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseBlockdevArg(%q) error = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseBlockdevArg(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
	}
}
