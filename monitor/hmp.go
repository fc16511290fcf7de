package monitor

import (
	"fmt"
	"strings"
)

// HMP, QEMU's human monitor: the commands people type, with QEMU's
// output, reached through human-monitor-command or a readline monitor
// (-monitor, -mon mode=readline). Only the commands below exist; their
// texts are QEMU 7.2's.

// hmpArg is what a command takes after its flags.
type hmpArg int

const (
	hmpNoArg   hmpArg = iota
	hmpOptWord        // one optional word (QEMU's "B?")
	hmpOptRest        // the optional rest of the line (QEMU's "S?")
)

type hmpCommand struct {
	names  string // "stop|s": the name and its aliases
	params string // as help shows them
	help   string
	flags  string // the single-letter flags it takes, in QEMU's order
	arg    hmpArg
	sub    []*hmpCommand // info's subcommands
	run    func(h *hmpRun, in hmpInput)
}

// hmpInput is a parsed command line's arguments.
type hmpInput struct {
	flags  map[byte]bool
	arg    string
	hasArg bool
}

// hmpRun is one command being run: where its output goes, and what is to
// happen once the output is out (cont's, powerdown's and quit's exits).
type hmpRun struct {
	srv  *Server
	out  strings.Builder
	then func()
}

func (h *hmpRun) printf(format string, a ...any) { fmt.Fprintf(&h.out, format, a...) }

// hmpCommands is sorted by name, as help lists them.
var hmpCommands []*hmpCommand

func init() {
	info := []*hmpCommand{
		{names: "block", params: "[-n] [device]", help: "show info of one block device or all block devices (-n: show named nodes)", flags: "n", arg: hmpOptWord, run: hmpInfoBlock},
		{names: "kvm", help: "show KVM information", run: func(h *hmpRun, _ hmpInput) { h.printf("kvm support: not compiled\n") }},
		{names: "name", help: "show the current VM name", run: func(h *hmpRun, _ hmpInput) {
			if name := h.srv.vm.Name(); name != "" {
				h.printf("%s\n", name)
			}
		}},
		// minivmm has no devices: its tree is the bare system bus QEMU
		// shows with -machine none.
		{names: "qtree", help: "show device tree", run: func(h *hmpRun, _ hmpInput) { h.printf("bus: main-system-bus\n  type System\n") }},
		{names: "status", help: "show the current VM status (running|paused)", run: hmpInfoStatus},
		{names: "version", help: "show the version of QEMU", run: func(h *hmpRun, _ hmpInput) { h.printf("%s\n", versionText()) }},
	}
	hmpCommands = []*hmpCommand{
		{names: "cont|c", help: "resume emulation", run: func(h *hmpRun, _ hmpInput) { h.then = h.srv.vm.Cont() }},
		{names: "help|?", params: "[cmd]", help: "show the help", arg: hmpOptRest, run: hmpHelp},
		{names: "info", params: "[subcommand]", help: "show various information about the system state", sub: info,
			run: func(h *hmpRun, _ hmpInput) { hmpHelp(h, hmpInput{arg: "info", hasArg: true}) }},
		{names: "quit|q", help: "quit the emulator", run: func(h *hmpRun, _ hmpInput) {
			h.srv.vm.Shutdown("host-qmp-quit")
			h.then = h.srv.vm.RequestExit
		}},
		{names: "stop|s", help: "stop emulation", run: func(h *hmpRun, _ hmpInput) { h.srv.vm.Stop() }},
		{names: "system_powerdown", help: "send system power down event", run: func(h *hmpRun, _ hmpInput) { h.then = h.srv.vm.Powerdown() }},
		{names: "system_reset", help: "reset the system", run: func(h *hmpRun, _ hmpInput) { h.srv.vm.Reset() }},
	}
}

func (c *hmpCommand) is(name string) bool {
	for _, n := range strings.Split(c.names, "|") {
		if n == name {
			return true
		}
	}
	return false
}

func lookupHMP(table []*hmpCommand, name string) *hmpCommand {
	for _, c := range table {
		if c.is(name) {
			return c
		}
	}
	return nil
}

func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\v' || b == '\f'
}

func skipSpace(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

func wordEnd(s string, i int) int {
	for i < len(s) && !isSpace(s[i]) {
		i++
	}
	return i
}

// parseHMP parses a command line as QEMU's monitor does. With no command
// (an empty line) cmd is nil and msg empty; an error is QEMU's text in
// msg, newline-terminated.
func parseHMP(line string) (cmd *hmpCommand, in hmpInput, msg string) {
	table := hmpCommands
	i := 0
	typedEnd := 0 // the end of the last command name, for "Try help ..."
	for {
		start := skipSpace(line, i)
		end := wordEnd(line, start)
		if start == end {
			if cmd == nil {
				return nil, in, ""
			}
			break
		}
		next := lookupHMP(table, line[start:end])
		if next == nil {
			return nil, in, fmt.Sprintf("unknown command: '%s'\n", line[:end])
		}
		cmd, typedEnd = next, end
		i = skipSpace(line, end)
		if cmd.sub == nil || i == len(line) {
			break
		}
		table = cmd.sub
	}
	fail := func(format string, a ...any) (*hmpCommand, hmpInput, string) {
		return nil, hmpInput{}, fmt.Sprintf(format, a...) + fmt.Sprintf("Try \"help %s\" for more information\n", line[:typedEnd])
	}
	in.flags = map[byte]bool{}
	for f := 0; f < len(cmd.flags); f++ {
		i = skipSpace(line, i)
		if i+1 >= len(line) || line[i] != '-' {
			continue
		}
		switch c := line[i+1]; {
		case c == cmd.flags[f]:
			in.flags[c] = true
			i += 2
		case strings.IndexByte(cmd.flags[f+1:], c) < 0:
			return fail("%s: unsupported option -%c\n", cmd.names, c)
		}
	}
	i = skipSpace(line, i)
	switch cmd.arg {
	case hmpOptWord:
		if end := wordEnd(line, i); end > i {
			in.arg, in.hasArg, i = line[i:end], true, end
		}
	case hmpOptRest:
		if i < len(line) {
			in.arg, in.hasArg, i = line[i:], true, len(line)
		}
	}
	if i = skipSpace(line, i); i < len(line) {
		return fail("%s: extraneous characters at the end of line\n", cmd.names)
	}
	return cmd, in, ""
}

// runHMP runs one command line; it returns the output, with QEMU's CRLF
// line ends, and what is to run once the output is delivered (or nil).
func (s *Server) runHMP(line string) (string, func()) {
	h := &hmpRun{srv: s}
	cmd, in, msg := parseHMP(line)
	switch {
	case msg != "":
		h.out.WriteString(msg)
	case cmd != nil:
		cmd.run(h, in)
	}
	return strings.ReplaceAll(h.out.String(), "\n", "\r\n"), h.then
}

func humanMonitorCommand(c *call, args Args) (any, error) {
	if _, ok := args.Int("cpu-index"); ok {
		// minivmm has no CPUs, so no index names one.
		return nil, genericError("Parameter 'cpu-index' expects a CPU number")
	}
	line, _ := args.Str("command-line")
	out, then := c.mon.srv.runHMP(line)
	c.afterReply = then
	return out, nil
}

// hmpHelp is help_cmd: every command, the info subcommands, or one.
func hmpHelp(h *hmpRun, in hmpInput) {
	words := strings.Fields(in.arg)
	table, prefix := hmpCommands, ""
	for n, w := range words {
		c := lookupHMP(table, w)
		if c == nil {
			h.printf("unknown command: '%s'\n", strings.Join(words[:n+1], " "))
			return
		}
		if n == len(words)-1 {
			if c.sub != nil {
				table, prefix = c.sub, prefix+w+" "
				break
			}
			h.printf("%s%s %s -- %s\n", prefix, c.names, c.params, c.help)
			return
		}
		if c.sub == nil {
			h.printf("%s%s %s -- %s\n", prefix, c.names, c.params, c.help)
			return
		}
		table, prefix = c.sub, prefix+w+" "
	}
	for _, c := range table {
		h.printf("%s%s %s -- %s\n", prefix, c.names, c.params, c.help)
	}
}

func hmpInfoStatus(h *hmpRun, _ hmpInput) {
	state := h.srv.vm.State()
	if state == StateRunning {
		h.printf("VM status: running\n")
		return
	}
	h.printf("VM status: paused")
	if state != StatePaused {
		h.printf(" (%s)", state)
	}
	h.printf("\n")
}

// versionText is "info version": QEMU's version and package run together,
// as QEMU prints them.
func versionText() string {
	triple, pkg := versionParts()
	return triple + pkg
}

// versionParts reads [Version]: "major.minor.micro" and the package.
func versionParts() (triple, pkg string) {
	nums := map[string]any{}
	for _, m := range Version {
		switch m.Key {
		case "qemu":
			for _, n := range m.Value.(Obj) {
				nums[n.Key] = n.Value
			}
		case "package":
			pkg, _ = m.Value.(string)
		}
	}
	return fmt.Sprintf("%v.%v.%v", nums["major"], nums["minor"], nums["micro"]), pkg
}

// Package is who is speaking, as query-version's package says.
func Package() string {
	_, pkg := versionParts()
	return pkg
}

// QEMUVersion is the version of QEMU whose QMP and command line minivmm
// speaks, "major.minor.micro".
func QEMUVersion() string {
	triple, _ := versionParts()
	return triple
}
