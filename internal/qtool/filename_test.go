package qtool

import (
	"reflect"
	"testing"

	"minivmm/block"
)

func TestParseFilename(t *testing.T) {
	for _, tc := range []struct {
		name   string
		want   block.Options
		isJSON bool
		bad    bool
	}{
		{name: "disk.img", want: block.Options{"driver": "file", "filename": "disk.img"}},
		{name: "file:disk.img", want: block.Options{"driver": "file", "filename": "disk.img"}},
		{name: "file:", want: block.Options{"driver": "file", "filename": ""}},
		{name: "file:a:b", want: block.Options{"driver": "file", "filename": "./a:b"}},
		{name: "file:/d/a:b", want: block.Options{"driver": "file", "filename": "/d/a:b"}},
		{name: "null-co://", want: block.Options{"driver": "null-co"}},
		{name: "blkdebug:conf:img", want: block.Options{"driver": "blkdebug", "config": "conf", "image": block.Options{"driver": "file", "filename": "img"}}},
		{name: "blkdebug::null-co://", want: block.Options{"driver": "blkdebug", "image": block.Options{"driver": "null-co"}}},
		{name: "blkdebug:conf", bad: true},
		{name: "./json:x", want: block.Options{"driver": "file", "filename": "./json:x"}},
		{name: `json:{"driver":"qcow2","file.filename":"a","file":{"driver":"file"}}`, isJSON: true,
			want: block.Options{"driver": "qcow2", "file": block.Options{"driver": "file", "filename": "a"}}},
		{name: `json:{"a.b.c":true}`, isJSON: true, want: block.Options{"a": block.Options{"b": block.Options{"c": true}}}},
		{name: `json:{"a":1,"a.b":2}`, isJSON: true, bad: true},
		{name: `json:[1]`, isJSON: true, bad: true},
		{name: `json:{} {}`, isJSON: true, bad: true},
		{name: `json:null`, isJSON: true, bad: true},
		// QEMU's JSON takes single-quoted strings, and any whitespace.
		{name: "json:{ 'driver': 'raw',\n\t'file': {'filename': 'it''s'}\n}", isJSON: true, bad: true},
		{name: "json:{ 'driver': 'raw',\n\t'file': {'filename': 'a\\'b\"c'}\n}", isJSON: true,
			want: block.Options{"driver": "raw", "file": block.Options{"filename": `a'b"c`}}},
		{name: `json:{"a":1,"a":2}`, isJSON: true, bad: true},
		// QEMU's legacy NBD filenames.
		{name: "nbd:unix:/tmp/s.sock", want: block.Options{"driver": "nbd", "server": block.Options{"type": "unix", "path": "/tmp/s.sock"}}},
		{name: "nbd:unix:/tmp/s.sock:exportname=sn", want: block.Options{"driver": "nbd", "export": "sn", "server": block.Options{"type": "unix", "path": "/tmp/s.sock"}}},
		{name: "nbd:localhost:10810", want: block.Options{"driver": "nbd", "server": block.Options{"type": "inet", "host": "localhost", "port": "10810"}}},
		{name: "nbd:[::1]:10810:exportname=", want: block.Options{"driver": "nbd", "export": "", "server": block.Options{"type": "inet", "host": "::1", "port": "10810"}}},
		{name: "nbd:localhost", bad: true},
	} {
		got, isJSON, err := ParseFilename(tc.name)
		if isJSON != tc.isJSON || (err != nil) != tc.bad || !tc.bad && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseFilename(%q) = %v, %v, %v; want %v, %v, bad %v", tc.name, got, isJSON, err, tc.want, tc.isJSON, tc.bad)
		}
	}
}

// FuzzParseFilename: any filename gives options or an error, and
// options whose every nested object is Options (what the block layer
// walks).
func FuzzParseFilename(f *testing.F) {
	for _, s := range []string{"a", "file:x", "nbd:unix:/s:exportname=e", "nbd:[::1]:1", "null-co://", `json:{"driver":"raw","file.filename":"x"}`, `json:{"a":{"b.c":1}}`, "json:{", `json:{"a.":1}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		opts, _, err := ParseFilename(s)
		if err != nil {
			return
		}
		var walk func(block.Options)
		walk = func(o block.Options) {
			for k, v := range o {
				switch v := v.(type) {
				case block.Options:
					walk(v)
				case map[string]any:
					t.Fatalf("%q: key %q holds a plain map", s, k)
				}
			}
		}
		walk(opts)
	})
}
