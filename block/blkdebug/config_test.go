package blkdebug

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		in, err string
		n       int
	}{
		{"[inject-error]\nevent = \"write_aio\"\nerrno = \"28\"\n\n# c\n[set-state]\nevent = \"l2_update\"\nnew_state = \"2\"\n", "", 2},
		{"[inject-error \"id\"]\nevent = \"read_aio\"\n", "", 1},
		{"event = \"x\"\n", "no group defined", 0},
		{"[bogus]\n", "There is no option group 'bogus'", 0},
		{"[inject-error]\nnew_state = \"1\"\n", "Invalid parameter 'new_state'", 0},
		{"[inject-error]\nevent \"x\"\n", "", 1},
		{"[inject-error]\nevent=\"x\"\n", "Invalid parameter 'event=\"x\"'", 0},
		{"[inject-error]\n   \n", "parse error", 0},
		{"[]\n", "no group defined", 0},
	} {
		s, err := parseConfig(strings.NewReader(tc.in))
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || len(s) != tc.n {
			t.Errorf("%q: %d sections, %v; want %d", tc.in, len(s), err, tc.n)
		}
	}
}

func TestNewRule(t *testing.T) {
	for _, tc := range []struct {
		opts map[string]string
		err  string
	}{
		{map[string]string{"event": "write_aio", "errno": "28", "once": "on", "sector": "8", "iotype": "write"}, ""},
		{map[string]string{"errno": "5"}, "Missing event name for rule"},
		{map[string]string{"event": "nosuch"}, "invalid parameter value: nosuch"},
		{map[string]string{"event": "read_aio", "errno": "x"}, "Parameter 'errno' expects a number"},
		{map[string]string{"event": "read_aio", "once": "x"}, "Parameter 'once' expects 'on' or 'off'"},
		{map[string]string{"event": "read_aio", "iotype": "x"}, "invalid parameter value: x"},
	} {
		r, err := newRule(section{group: "inject-error", opts: tc.opts})
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%v: %v, want %q", tc.opts, err, tc.err)
			}
			continue
		}
		if err != nil || r.errno != 28 || !r.once || r.offset != 4096 || r.ioMask != 1<<ioWrite {
			t.Errorf("%v: %+v, %v", tc.opts, r, err)
		}
	}
}

// FuzzParseConfig: any config file parses or is refused, without panic,
// and every section it returns makes a rule or a clear error.
func FuzzParseConfig(f *testing.F) {
	f.Add("[inject-error]\nevent = \"write_aio\"\nerrno = \"5\"\nonce = \"on\"\n")
	f.Add("[set-state]\nstate = \"1\"\nevent = \"l2_update\"\nnew_state = \"2\"\n")
	f.Add("# x\n\n[inject-error \"a\"]\n  sector = \"0x10\"\n")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := parseConfig(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, sec := range s {
			if r, err := newRule(sec); err == nil && !knownEvent(r.event) {
				t.Fatalf("rule on unknown event %q", r.event)
			}
		}
	})
}
