package monitor

import (
	"strings"
	"testing"
)

// TestEncodePretty: pretty=on output is QEMU 7.2's bytes (read from
// qemu-system-x86_64 -mon mode=control,pretty=on): CRLF everywhere, empty
// containers closed on a line of their own.
func TestEncodePretty(t *testing.T) {
	for _, tc := range []struct {
		msg  Obj
		want string
	}{
		{Obj{{"return", Obj{}}}, "{\r\n    \"return\": {\r\n    }\r\n}"},
		{Obj{{"return", []any{}}}, "{\r\n    \"return\": [\r\n    ]\r\n}"},
		{Obj{{"id", []any{1, Obj{}}}, {"error", Obj{{"class", "CommandNotFound"}, {"desc", "The command nosuch has not been found"}}}},
			"{\r\n    \"id\": [\r\n        1,\r\n        {\r\n        }\r\n    ],\r\n    \"error\": {\r\n        \"class\": \"CommandNotFound\",\r\n        \"desc\": \"The command nosuch has not been found\"\r\n    }\r\n}"},
	} {
		var b strings.Builder
		encode(&b, tc.msg, true, 0)
		if b.String() != tc.want {
			t.Errorf("got  %q\nwant %q", b.String(), tc.want)
		}
		b.Reset()
		encode(&b, tc.msg, false, 0)
		if strings.Contains(b.String(), "\n") {
			t.Errorf("not pretty: %q", b.String())
		}
	}
}
