package monitor

import (
	"strings"
	"testing"
)

// TestHMP: command lines and QEMU 7.2's answers to them through
// human-monitor-command (taken from qemu-system-x86_64 -machine none,
// where the VMM's state matches minivmm's).
func TestHMP(t *testing.T) {
	c := bareConn(t, true)
	c.mon.srv.vm.SetName("foo")
	tests := []struct{ line, want string }{
		{"info status", "VM status: running\r\n"},
		{"  info   status  ", "VM status: running\r\n"},
		{"info name", "foo\r\n"},
		{"info qtree", "bus: main-system-bus\r\n  type System\r\n"},
		{"info block", ""},
		{"info block -n", ""},
		{"info kvm", "kvm support: not compiled\r\n"},
		{"", ""},
		{"nosuch", "unknown command: 'nosuch'\r\n"},
		{"info nosuch", "unknown command: 'info nosuch'\r\n"},
		{"info fdsets", "unknown command: 'info fdsets'\r\n"},
		{"stop foo", "stop|s: extraneous characters at the end of line\r\nTry \"help stop\" for more information\r\n"},
		{"s foo", "stop|s: extraneous characters at the end of line\r\nTry \"help s\" for more information\r\n"},
		{"info status x", "status: extraneous characters at the end of line\r\nTry \"help info status\" for more information\r\n"},
		{"info  status x", "status: extraneous characters at the end of line\r\nTry \"help info  status\" for more information\r\n"},
		{"info version x", "version: extraneous characters at the end of line\r\nTry \"help info version\" for more information\r\n"},
		{"help stop", "stop|s  -- stop emulation\r\n"},
		{"help quit", "quit|q  -- quit the emulator\r\n"},
		{"help cont", "cont|c  -- resume emulation\r\n"},
		{"help help", "help|? [cmd] -- show the help\r\n"},
		{"help system_powerdown", "system_powerdown  -- send system power down event\r\n"},
		{"help system_reset", "system_reset  -- reset the system\r\n"},
		{"help info status", "info status  -- show the current VM status (running|paused)\r\n"},
		{"help nosuch", "unknown command: 'nosuch'\r\n"},
		{"h", "unknown command: 'h'\r\n"},
		{"stop", ""},
		{"info status", "VM status: paused\r\n"},
		{"c", ""},
		{"info status", "VM status: running\r\n"},
		{"system_reset", ""},
	}
	for _, tc := range tests {
		out, _ := c.mon.srv.runHMP(tc.line)
		if out != tc.want {
			t.Errorf("%q:\n got %q\nwant %q", tc.line, out, tc.want)
		}
	}
}

// TestHMPHelpLists: help lists every command, info every subcommand, in
// QEMU's format, sorted.
func TestHMPHelpLists(t *testing.T) {
	c := bareConn(t, true)
	help, _ := c.mon.srv.runHMP("help")
	if q, _ := c.mon.srv.runHMP("?"); q != help {
		t.Errorf("? differs from help")
	}
	lines := strings.Split(strings.TrimSuffix(help, "\r\n"), "\r\n")
	if len(lines) != len(hmpCommands) || lines[0] != "cont|c  -- resume emulation" ||
		!strings.Contains(help, "\r\ninfo [subcommand] -- show various information about the system state\r\n") {
		t.Errorf("help:\n%s", help)
	}
	info, _ := c.mon.srv.runHMP("info")
	if h, _ := c.mon.srv.runHMP("help info"); h != info {
		t.Errorf("help info differs from info")
	}
	for _, want := range []string{"info block [-n] [device] -- ", "info name  -- show the current VM name\r\n", "info version  -- show the version of QEMU\r\n"} {
		if !strings.Contains(info, want) {
			t.Errorf("info lacks %q:\n%s", want, info)
		}
	}
}

func TestHumanMonitorCommand(t *testing.T) {
	c := bareConn(t, true)
	for _, tc := range []struct{ in, want string }{
		{`{"execute":"human-monitor-command","arguments":{"command-line":"info status"}}`, `{"return": "VM status: running\r\n"}`},
		{`{"execute":"human-monitor-command"}`, `{"error": {"class": "GenericError", "desc": "Parameter 'command-line' is missing"}}`},
		{`{"execute":"human-monitor-command","arguments":{"command-line":1}}`, `{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'command-line', expected: string"}}`},
		{`{"execute":"human-monitor-command","arguments":{"command-line":"info status","cpu-index":0}}`, `{"error": {"class": "GenericError", "desc": "Parameter 'cpu-index' expects a CPU number"}}`},
		{`{"execute":"query-name"}`, `{"return": {}}`},
		{`{"execute":"query-kvm"}`, `{"return": {"enabled": false, "present": false}}`},
		{`{"execute":"query-machines"}`, `{"return": [{"hotpluggable-cpus": false, "name": "none", "numa-mem-supported": false, "cpu-max": 1, "deprecated": false, "default-ram-id": "ram"}]}`},
		{`{"execute":"query-command-line-options","arguments":{"option":"mon"}}`, `{"return": [{"parameters": [{"name": "pretty", "type": "boolean"}, {"name": "chardev", "type": "string"}, {"name": "mode", "type": "string"}], "option": "mon"}]}`},
		{`{"execute":"query-command-line-options","arguments":{"option":"msg"}}`, `{"return": [{"parameters": [{"name": "guest-name", "help": "Prepends guest name for error messages but only if -name guest is set otherwise option is ignored\n", "type": "boolean"}, {"name": "timestamp", "type": "boolean"}], "option": "msg"}]}`},
		{`{"execute":"query-command-line-options","arguments":{"option":"add-fd"}}`, `{"return": [{"parameters": [{"name": "opaque", "help": "free-form string used to describe fd", "type": "string"}, {"name": "set", "help": "ID of the fd set to add fd to", "type": "number"}, {"name": "fd", "help": "file descriptor of which a duplicate is added to fd set", "type": "number"}], "option": "add-fd"}]}`},
		{`{"execute":"query-command-line-options","arguments":{"option":"drive"}}`, `{"return": [{"parameters": [{"name": "read-only", "help": "open drive file as read-only", "type": "boolean"}, {"name": "file", "help": "file name", "type": "string"}, {"name": "if", "help": "interface (ide, scsi, sd, mtd, floppy, pflash, virtio)", "type": "string"}, {"name": "detect-zeroes", "help": "try to optimize zero writes (off, on, unmap)", "type": "string"}, {"name": "format", "help": "disk format (raw, qcow2, ...)", "type": "string"}, {"name": "aio", "help": "host AIO implementation (threads, native, io_uring)", "type": "string"}, {"name": "discard", "help": "discard operation (ignore/off, unmap/on)", "type": "string"}, {"name": "auto-read-only", "help": "Node can become read-only if opening read-write fails", "type": "boolean"}, {"name": "node-name", "help": "Node name of the block device node", "type": "string"}], "option": "drive"}]}`},
		{`{"execute":"query-command-line-options","arguments":{"option":"nosuch"}}`, `{"error": {"class": "GenericError", "desc": "invalid option name: nosuch"}}`},
		{`{"execute":"query-command-line-options","arguments":{"option":1}}`, `{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'option', expected: string"}}`},
		// QEMU checks the arguments before it sees negotiation is done.
		{`{"execute":"qmp_capabilities","arguments":{"enable":["foo"]}}`, `{"error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'foo'"}}`},
		{`{"execute":"human-monitor-command","arguments":{"command-line":"  nosuch"}}`, `{"return": "unknown command: '  nosuch'\r\n"}`},
		{`{"execute":"human-monitor-command","arguments":{"command-line":"  stop x"}}`, `{"return": "stop|s: extraneous characters at the end of line\r\nTry \"help   stop\" for more information\r\n"}`},
		{`{"execute":"human-monitor-command","arguments":{"command-line":"info block -x"}}`, `{"return": "block: unsupported option -x\r\nTry \"help info block\" for more information\r\n"}`},
		{`{"execute":"human-monitor-command","arguments":{"command-line":"info block a b"}}`, `{"return": "block: extraneous characters at the end of line\r\nTry \"help info block\" for more information\r\n"}`},
		{`{"execute":"human-monitor-command","arguments":{"command-line":"help info nosuch"}}`, `{"return": "unknown command: 'info nosuch'\r\n"}`},
		{`{"execute":"human-monitor-command","arguments":{"command-line":"help stop x"}}`, `{"return": "stop|s  -- stop emulation\r\n"}`},
	} {
		if got := run(c, tc.in); got != tc.want {
			t.Errorf("%s\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{`{"execute":"qmp_capabilities","arguments":{"enable":["foo"]}}`, `{"error": {"class": "GenericError", "desc": "Parameter 'null' does not accept value 'foo'"}}`},
		{`{"execute":"qmp_capabilities","arguments":{"enable":[1]}}`, `{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'enable[0]', expected: string"}}`},
		{`{"execute":"qmp_capabilities","arguments":{"enable":"oob"}}`, `{"error": {"class": "GenericError", "desc": "Invalid parameter type for 'enable', expected: array"}}`},
	} {
		if got := run(bareConn(t, false), tc.in); got != tc.want {
			t.Errorf("%s\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

// TestPowerdownQuits: system_powerdown of a running VM is POWERDOWN, the
// reply, then SHUTDOWN (guest-shutdown) and exit; of a paused VM, the
// shutdown waits for cont.
func TestPowerdownQuits(t *testing.T) {
	for _, paused := range []bool{false, true} {
		c := bareConn(t, true)
		vm := c.mon.srv.vm
		var events []string
		vm.emit = func(ev string, data Obj) {
			var b strings.Builder
			encode(&b, data, false, 0)
			events = append(events, ev+b.String())
		}
		if paused {
			vm.Stop()
		}
		cl := &call{conn: c}
		c.execute(cl, []byte(`{"execute":"system_powerdown"}`))
		if paused {
			if cl.afterReply != nil {
				t.Fatal("a paused VM shuts down at once")
			}
			cl = &call{conn: c}
			c.execute(cl, []byte(`{"execute":"cont"}`))
		}
		select {
		case <-vm.ExitRequested():
			t.Fatal("exit before the reply")
		default:
		}
		cl.afterReply()
		<-vm.ExitRequested()
		want := `POWERDOWN{} SHUTDOWN{"guest": true, "reason": "guest-shutdown"}`
		if paused {
			want = `STOP{} POWERDOWN{} RESUME{} SHUTDOWN{"guest": true, "reason": "guest-shutdown"}`
		}
		if got := strings.Join(events, " "); got != want {
			t.Errorf("paused %v: events %s, want %s", paused, got, want)
		}
	}
}

// FuzzParseHMP: any command line parses without panic, and an accepted
// one names a command of the table.
func FuzzParseHMP(f *testing.F) {
	for _, s := range []string{"info status", "info block -n d0", "help info status", "s foo", "info  ", "-", "info block -", "info block -x", "?", "\t\tq"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		cmd, in, msg := parseHMP(line)
		if cmd != nil && msg != "" || msg != "" && !strings.HasSuffix(msg, "\n") {
			t.Fatalf("%q: %v %q", line, cmd, msg)
		}
		if cmd != nil && in.hasArg && !strings.Contains(line, in.arg) {
			t.Fatalf("%q: argument %q is not from the line", line, in.arg)
		}
	})
}
