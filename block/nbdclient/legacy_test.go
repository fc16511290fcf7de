package nbdclient

import (
	"encoding/json"
	"reflect"
	"testing"

	"minivmm/block"
)

func TestApplyLegacyOptions(t *testing.T) {
	for _, tc := range []struct {
		in      block.Options
		want    block.Options
		wantErr string
	}{
		{in: block.Options{"driver": "nbd", "host": json.Number("-1")},
			want: block.Options{"driver": "nbd", "server": block.Options{"type": "inet", "host": "-1", "port": "10809"}}},
		{in: block.Options{"host": "h", "port": json.Number("42"), "export": "e"},
			want: block.Options{"export": "e", "server": block.Options{"type": "inet", "host": "h", "port": "42"}}},
		{in: block.Options{"path": json.Number("42")}, want: block.Options{"server": block.Options{"type": "unix", "path": "42"}}},
		{in: block.Options{"port": "1"}, want: block.Options{}},
		{in: block.Options{"server": block.Options{"type": "unix"}}, want: block.Options{"server": block.Options{"type": "unix"}}},
		{in: block.Options{"path": "p", "host": "h"}, wantErr: "path and host may not be used at the same time"},
		{in: block.Options{"path": "p", "port": "1"}, wantErr: "port may not be used without host"},
		{in: block.Options{"host": "h", "server": block.Options{}}, wantErr: "Cannot use 'server' and path/host/port at the same time"},
		{in: block.Options{"host": "h", "server.type": "inet"}, wantErr: "Cannot use 'server' and path/host/port at the same time"},
		{in: block.Options{"host": []any{"x"}}, wantErr: "Invalid parameter type for 'host', expected: string"},
	} {
		err := ApplyLegacyOptions(tc.in)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%v: error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(tc.in, tc.want) {
			t.Errorf("got %v, %v; want %v", tc.in, err, tc.want)
		}
	}
}

func FuzzApplyLegacyOptions(f *testing.F) {
	f.Add("h", "1", "", true, true, false)
	f.Add("", "", "/s", false, false, true)
	f.Fuzz(func(t *testing.T, host, port, path string, hasHost, hasPort, hasPath bool) {
		o := block.Options{"driver": "nbd"}
		if hasHost {
			o["host"] = host
		}
		if hasPort {
			o["port"] = json.Number(port)
		}
		if hasPath {
			o["path"] = path
		}
		if err := ApplyLegacyOptions(o); err == nil {
			for _, k := range []string{"host", "port", "path"} {
				if _, left := o[k]; left {
					t.Fatalf("%s left in %v", k, o)
				}
			}
		}
	})
}
