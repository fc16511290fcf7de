package block

import (
	"errors"
	"testing"
)

func TestParseJSONFilename(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // the "file" child's filename, "" for an error
		wantErr error
	}{
		{`{"driver": "qcow2", "file": {"driver": "file", "filename": "a"}}`, "a", nil},
		{`{'driver': 'qcow2', 'file.driver': 'file', 'file.filename': 'b'}`, "b", nil},
		{`{"driver": "qcow2", "file": "x", "file.filename": "c"}`, "", nil},
		{`[1]`, "", ErrJSONFilename},
		{`{bad`, "", ErrJSONFilename},
	} {
		o, err := ParseJSONFilename(tc.in)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("%s: error %v, want %v", tc.in, err, tc.wantErr)
			}
			continue
		}
		if tc.want == "" {
			if err == nil {
				t.Errorf("%s: no error for mixed dotted and nested keys", tc.in)
			}
			continue
		}
		f, _ := o["file"].(Options)
		if err != nil || f == nil || f["filename"] != tc.want || o["driver"] != "qcow2" {
			t.Errorf("%s: %v, %v", tc.in, o, err)
		}
	}
}

func FuzzParseJSONFilename(f *testing.F) {
	f.Add(`{"driver": "qcow2", "file": {"driver": "file", "filename": "a"}}`)
	f.Add(`{'a.b.c': 1, 'a': {'b': {'d': 2}}}`)
	f.Fuzz(func(t *testing.T, s string) {
		ParseJSONFilename(s)
	})
}
