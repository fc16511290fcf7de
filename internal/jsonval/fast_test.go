package jsonval

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// reopenMsg is a blockdev-reopen as QMP clients send it, compact and with
// keys sorted as encoding/json marshals them.
const reopenMsg = `{"arguments":{"options":[{"driver":"file","filename":"/dev/fdset/1","node-name":"f","read-only":false},` +
	`{"driver":"raw","file":"f","node-name":"r","read-only":false}]},"execute":"blockdev-reopen","id":17}`

var fastSeeds = []string{
	`{"execute":"qmp_capabilities"}`,
	`{ "execute" : "qmp_capabilities" , "arguments" : { "enable" : [ ] } }`,
	`{'execute':'qmp_capabilities'}`,
	reopenMsg,
	`{"execute":"blockdev-add","arguments":{"driver":"qcow2","node-name":"disk","discard":"unmap","cache":{"direct":true,"no-flush":false},` +
		`"file":{"driver":"file","filename":"/tmp/a.qcow2","aio":"threads","locking":"off"},"backing":null}}`,
	`{"execute":"add-fd","arguments":{"fdset-id":1,"opaque":"rdonly:/tmp/x"},"id":{"a":[1,2.5,-3e2]}}`,
	"{\"execute\":\"query-status\",\t\"id\":\"x\"}\r\n",
	`-0`, `0`, `1e5`, `1.5E-3`, `-1.0e+10`, `123456789012345678901234567890`, `1E400`, `[0,-0.0,1e-0]`,
	`01`, `-`, `1.`, `.5`, `1e`, `1e+`, `+1`, `--1`, `0x10`, `1.5.3`, `[1 2]`, `NaN`, `Infinity`,
	`"\"\\\/\b\f\n\r\t"`, `"\u0041\u00e9\u4e2d\u0000\uffff\uFFFD"`, `"\ud83d\ude00"`, `"\ud800"`, `"\udc00\ud800x"`,
	`"\u12"`, `"\u12g4"`, `"\x"`, `"\'"`, `'it\'s'`, `"é"`, "\"\xff\"", "\"\xed\xa0\x80\"", "\"a\x01\"", "\"\x7f\"",
	`{"a":1,"a":2}`, `{"a":1,"\u0061":2}`, `{"a":{"b":1,"b":2}}`, `{"a":1,}`, `[1,]`, `[,1]`, `{,}`, `{"a"}`, `{"a":}`,
	`{1:2}`, `{"a" 1}`, `[`, `{`, `"`, `"abc`, ``, ` `, `}`, `]`, `[]]`, `{}}`, `{} {}`, `12abc`, `truex`, `tru`, `nul`,
	`[true,false,null]`, `[truefalse]`, `abc`, "\ufeff{}", "{}\x00",
	strings.Repeat("[", 64) + strings.Repeat("]", 64),
	strings.Repeat("[", 65) + strings.Repeat("]", 65),
	strings.Repeat(`{"a":`, 70) + "1" + strings.Repeat("}", 70),
	strings.Repeat("[", 5000) + strings.Repeat("]", 5000),
}

// FuzzDecodeFast checks the fast path against the token path it stands in
// for: whatever the fast path accepts, the token path accepts as the same
// value, and Decode answers exactly as the token path on every input. A
// panic anywhere fails the target too.
func FuzzDecodeFast(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		std := standardQuotes(data)
		fast, fastOK := decodeFast(std)
		ref, refErr := decodeTokens(std)
		if fastOK && (refErr != nil || !reflect.DeepEqual(fast, ref)) {
			t.Fatalf("fast path decoded %q to %#v; token path: %#v, %v", data, fast, ref, refErr)
		}
		got, err := Decode(data)
		if errText(err) != errText(refErr) || !reflect.DeepEqual(got, ref) {
			t.Fatalf("Decode(%q) = %#v, %v; token path: %#v, %v", data, got, err, ref, refErr)
		}
		if !bytes.Equal(data, orig) {
			t.Fatalf("Decode changed its input %q to %q", orig, data)
		}
	})
}

func errText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestDecodeFast pins down which inputs the fast path takes, so that it
// cannot quietly fall back on everything (the fuzz target would not
// notice) nor take what it should leave.
func TestDecodeFast(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{reopenMsg, true},
		{`{"execute":"qmp_capabilities"}`, true},
		{" \t\r\n{ \"a\" : [ 1 , -0 , 1.5E-3 , 1e5 , 123456789012345678901234567890 ] } \n", true},
		{`["\"\\\/\b\f\n\r\t","\u0041\u00e9\uFFFD\u0000"]`, true},
		{`[true,false,null,{},[]]`, true},
		{strings.Repeat("[", 64) + strings.Repeat("]", 64), true},
		{strings.Repeat(" ", maxSharedInput) + `{"a":"b","c":1}`, true},

		{strings.Repeat("[", 65) + strings.Repeat("]", 65), false},
		{`{"a":1,"a":2}`, false},
		{`{"a":1,"\u0061":2}`, false},
		{`"\ud83d\ude00"`, false},
		{`"é"`, false},
		{"\"\xff\"", false},
		{"\"a\x01\"", false},
		{`"\'"`, false},
		{`01`, false},
		{`1.`, false},
		{`1e+`, false},
		{`[1,]`, false},
		{`{"a":1,}`, false},
		{`{} {}`, false},
		{`truex`, false},
		{``, false},
	}
	for _, tc := range tests {
		v, ok := decodeFast([]byte(tc.in))
		if ok != tc.want {
			t.Errorf("decodeFast(%.80q) accepted = %v, want %v", tc.in, ok, tc.want)
			continue
		}
		ref, err := decodeTokens([]byte(tc.in))
		if ok && (err != nil || !reflect.DeepEqual(v, ref)) {
			t.Errorf("decodeFast(%.80q) = %#v; token path: %#v, %v", tc.in, v, ref, err)
		}
	}
}

// TestDecodeDeep checks that nesting far beyond the fast path's bound
// still decodes, as it did before the fast path.
func TestDecodeDeep(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
	}{
		{strings.Repeat("[", 5000) + strings.Repeat("]", 5000), ""},
		{strings.Repeat(`{"a":`, 5000) + "1" + strings.Repeat("}", 5000), ""},
		{strings.Repeat("[", 5000), "premature EOI"},
	}
	for _, tc := range tests {
		v, err := Decode([]byte(tc.in))
		want := tc.wantErr
		if want == "" {
			want = errText(nil)
		}
		if errText(err) != want || err == nil && v == nil {
			t.Errorf("Decode(%.20q...) = %T, %v; want error %s", tc.in, v, err, want)
		}
	}
}

// TestDecodeFastOwnsStrings checks that decoded strings do not alias the
// caller's buffer, which a connection reuses for the next message.
func TestDecodeFastOwnsStrings(t *testing.T) {
	for _, in := range []string{`{"a":"bc"}`, strings.Repeat(" ", maxSharedInput) + `{"a":"bc"}`} {
		data := []byte(in)
		v, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		for i := range data {
			data[i] = 'x'
		}
		if want := map[string]any{"a": "bc"}; !reflect.DeepEqual(v, want) {
			t.Errorf("after overwriting the input, decoded value = %#v, want %#v", v, want)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	data := []byte(reopenMsg)
	paths := []struct {
		name   string
		decode func([]byte) (any, error)
	}{
		{"reference", func(d []byte) (any, error) { return decodeTokens(standardQuotes(d)) }},
		{"fast", Decode},
	}
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := p.decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
