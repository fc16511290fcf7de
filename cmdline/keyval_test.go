package cmdline

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

type obj = map[string]any

func TestParseKeyval(t *testing.T) {
	long := strings.Repeat("a", 128)
	for _, tc := range []struct {
		in, implied string
		want        obj
		err         string // each checked against QEMU 7.2's -blockdev
	}{
		{in: "", want: obj{}},
		{in: "driver=file,filename=/x", want: obj{"driver": "file", "filename": "/x"}},
		{in: "file.driver=file,file.filename=/a,,b,node-name=n",
			want: obj{"file": obj{"driver": "file", "filename": "/a,b"}, "node-name": "n"}},
		{in: "a=1,,", want: obj{"a": "1,"}},
		{in: "a=1,", want: obj{"a": "1"}},
		{in: "a=", want: obj{"a": ""}},
		{in: "a=,,,b=2", want: obj{"a": ",", "b": "2"}},
		{in: "a=1,a=2", want: obj{"a": "2"}}, // last wins, as in QEMU
		{in: "c.1=y,c.0=x", want: obj{"c": []any{"x", "y"}}},
		{in: "c.0.d=x,c.00.e=y", want: obj{"c": []any{obj{"d": "x", "e": "y"}}}},
		{in: "a_b-c=x,__com.redhat_x=y,__com.redhat_x.k=1", err: "Parameters '__com.redhat_x.*' used inconsistently"},
		{in: "a_b-c=x,__com.redhat_x=y", want: obj{"a_b-c": "x", "__com.redhat_x": "y"}},
		{in: "null-co,node-name=a", implied: "driver", want: obj{"driver": "null-co", "node-name": "a"}},
		{in: "null-co", implied: "driver", want: obj{"driver": "null-co"}},
		{in: "x=1,null-co", implied: "driver", err: "Expected '=' after parameter 'null-co'"},
		{in: "null-co,,x,node-name=a", implied: "driver", err: "Invalid parameter ''"},
		{in: ",driver=null-co", implied: "driver", err: "Invalid parameter ''"},
		{in: "a.b=1,a=2", err: "Parameters 'a.*' used inconsistently"},
		{in: "a=2,a.b=1", err: "Parameters 'a.*' used inconsistently"},
		{in: "a.b.c=1,a.b=2", err: "Parameters 'a.b.*' used inconsistently"},
		{in: "a.0=x,a.b=1", err: "Parameters 'a.*' used inconsistently"},
		{in: "a.b=1,a.0=2", err: "Parameters 'a.*' used inconsistently"},
		{in: "a.1=x", err: "Parameter 'a.0' missing"},
		{in: "a.0.1=x", err: "Parameter 'a.0.0' missing"},
		{in: "a.99999999999=x", err: "Parameter 'a.0' missing"},
		{in: "0=x", err: "Invalid parameter '0'"},
		{in: "x..y=1", err: "Invalid parameter 'x..y'"},
		{in: "x.=1", err: "Invalid parameter 'x.'"},
		{in: ".x=1", err: "Invalid parameter '.x'"},
		{in: "=1", err: "Invalid parameter ''"},
		{in: "1a=x", err: "Invalid parameter '1a'"},
		{in: "_x=y", err: "Invalid parameter '_x'"},
		{in: "a b=1", err: "Invalid parameter 'a b'"},
		{in: "a.0b=1", err: "Invalid parameter 'a.0b'"},
		{in: "x", err: "Expected '=' after parameter 'x'"},
		{in: "x.y", err: "Expected '=' after parameter 'x.y'"},
		{in: "driver=null-co,help", err: "Help is not available for this option"},
		{in: "?", err: "Help is not available for this option"},
		{in: "help,x", err: "Expected '=' after parameter 'x'"},
		{in: "help,a.1=x", err: "Help is not available for this option"},
		{in: long + "=1", err: "Parameter '" + long + "' is too long"},
		{in: "x." + long + "=1", err: "Parameter fragment '" + long + "' is too long"},
		{in: long + ".x=1", err: "Parameter fragment '" + long + "' is too long"},
		{in: long[1:] + "=1", want: obj{long[1:]: "1"}},
	} {
		got, err := ParseKeyval(tc.in, tc.implied)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseKeyval(%q, %q) error = %v, want %q", tc.in, tc.implied, err, tc.err)
			}
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseKeyval(%q, %q) = %v, want %v", tc.in, tc.implied, got, tc.want)
		}
	}
}

// keyvalString renders a parsed tree back to keyval syntax.
func keyvalString(prefix string, v any, out *[]string) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			keyvalString(prefix+k+".", x, out)
		}
	case []any:
		for i, x := range v {
			keyvalString(prefix+strconv.Itoa(i)+".", x, out)
		}
	case string:
		*out = append(*out, strings.TrimSuffix(prefix, ".")+"="+strings.ReplaceAll(v, ",", ",,"))
	}
}

func FuzzParseKeyval(f *testing.F) {
	for _, s := range []string{"", "a=1,,", "file.driver=file,file.filename=/x", "c.0=x,c.1=y", "a.b=1,a=2", "null-co,x=1", "help", "__com.redhat_x=1"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, implied bool) {
		m, err := ParseKeyval(s, map[bool]string{true: "driver"}[implied])
		if err != nil {
			return
		}
		var elems []string
		keyvalString("", m, &elems)
		again, err := ParseKeyval(strings.Join(elems, ","), "")
		if err != nil || !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip of %q via %q: %v became %v (%v)", s, strings.Join(elems, ","), m, again, err)
		}
	})
}
