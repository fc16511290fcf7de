// Package imgtool is minivmm img: qemu-img over minivmm's block layer.
// Each subcommand lives in its own file and registers itself here, with
// qemu-img's syntax, output and exit codes; messages are prefixed with
// the name the tool was run by, as qemu-img's with its argv[0]. The work
// itself is the block layer's and block/engine's.
package imgtool

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"minivmm/block/objects"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
)

// env is one run of the tool: its name and where its output goes.
type env struct {
	qtool.Program
	prog           string // Program.Name, what messages start with
	stdout, stderr io.Writer
	closeErrs      []error           // from closing images (session.close)
	noObject       bool              // the command's imgCommand.noObject
	objects        *objects.Registry // --object's (object.go); nil: none given
}

// imgCommand is one `minivmm img` subcommand: it gets the arguments after
// its name and returns the exit status.
type imgCommand struct {
	run   func(e *env, args []string) int
	usage string // one line: "info [-f fmt] [--output=ofmt] [--backing-chain] filename"
	// noObject: the command takes no --object (qemu-img 7.2's bench).
	noObject bool
}

// imgCommands is filled by the subcommands' init functions.
var imgCommands = map[string]imgCommand{}

// imgHelp is what `img --help` and every `img <command> -h` print, as
// qemu-img prints its one help text for both. It lists minivmm's commands,
// not qemu-img's, which has some minivmm lacks.
func imgHelp(stdout io.Writer) int {
	var b strings.Builder
	b.WriteString("usage: minivmm img [command] [command options]\n\nCommand syntax:\n")
	for _, name := range slices.Sorted(maps.Keys(imgCommands)) {
		fmt.Fprintf(&b, "  %s\n", imgCommands[name].usage)
	}
	io.WriteString(stdout, b.String())
	return 0
}

// Run is "minivmm img": it runs the subcommand args name and returns the
// exit status.
func Run(p qtool.Program, args []string, stdout, stderr io.Writer) int {
	// qemu-img prints with stdio: its stdout is buffered, stderr not.
	out := qtool.NewStdout(stdout)
	defer out.Flush()
	stdout = out
	e := &env{Program: p, prog: p.Name, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprintf(stderr, "%s: Not enough arguments\n", e.prog)
		return e.tryHelp()
	}
	switch args[0] {
	case "-h", "--help":
		return imgHelp(stdout)
	case "-V", "--version":
		p.PrintVersion(stdout)
		return 0
	}
	cmd, ok := imgCommands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "%s: Command not found: %s\n", e.prog, args[0])
		return 1
	}
	e.noObject = cmd.noObject
	code := cmd.run(e, args[1:])
	// Images are closed by then; what a format wrote back at close (or
	// when its last writer left) and failed fails the run, which qemu-img
	// would only print.
	for _, err := range e.closeErrs {
		for _, m := range qtool.CloseMessages(err) {
			fmt.Fprintf(stderr, "%s: %s\n", e.prog, m)
		}
		if code == 0 {
			code = 1
		}
	}
	return code
}

// tryHelp is qemu-img's pointer to its help, naming the program as run.
func (e *env) tryHelp() int {
	fmt.Fprintf(e.stderr, "Try '%s --help' for more information\n", e.prog)
	return 1
}

// objectOpt is --object's code, which no short option uses.
const objectOpt = 0x10000

// imgCmdLine is a subcommand's command line once getopt has read its
// options.
type imgCmdLine struct {
	operands []string
	addFds   []cmdline.Occurrence
}

// image is the one image file name most subcommands take, or false
// after qemu-img's error for anything else.
func (e *env) image(a imgCmdLine) (string, bool) {
	if len(a.operands) != 1 {
		fmt.Fprintf(e.stderr, "%s: Expecting one image file name\n", e.prog)
		e.tryHelp()
		return "", false
	}
	return a.operands[0], true
}

// getopt reads a subcommand's options the way every qemu-img command
// does, handling what they all share: -h/--help prints the help and exits
// 0, -add-fd/--add-fd (minivmm's, for fd passing) is collected, --object
// is checked (object.go), and a bad
// option gets qemu-img's message. Each other option goes to opt, which
// returns false after printing its own error. It returns the exit status
// when the command is to end now.
func (e *env) getopt(args []string, short string, long []qtool.LongOption,
	opt func(c rune, arg string) bool) (imgCmdLine, int, bool) {
	var errs strings.Builder
	common := []qtool.LongOption{qtool.Opt("help", false, 'h'), qtool.Opt("add-fd", true, 'A')}
	if !e.noObject {
		common = append(common, qtool.Opt("object", true, objectOpt))
	}
	g := &qtool.Getopt{
		Prog: e.prog, Args: args, Short: "h" + short, Stderr: &errs,
		Long: append(common, long...),
		Dash: []qtool.LongOption{qtool.Opt("add-fd", true, 'A')},
	}
	var a imgCmdLine
	for {
		c, arg := g.Next()
		switch c {
		case 0:
			a.operands = g.Operands
			return a, 0, true
		case '?':
			e.optionError(g, errs.String())
			return a, 1, false
		case 'h':
			return a, imgHelp(e.stdout), false
		case 'A':
			a.addFds = append(a.addFds, cmdline.Occurrence{Name: "add-fd", Value: arg})
		case objectOpt:
			if !e.object(arg) {
				return a, 1, false
			}
		default:
			if !opt(c, arg) {
				return a, 1, false
			}
		}
	}
}

// optionError turns getopt's glibc message into qemu-img's, which names
// the argument as given (argv[optind-1]). Inside a cluster of short
// options that argument is not yet the one at fault (qemu-img then names
// the one before it, even the command name), so there the option itself is
// named.
func (e *env) optionError(g *qtool.Getopt, glibcMsg string) {
	what := g.Culprit()
	if strings.Contains(glibcMsg, "requires an argument") {
		fmt.Fprintf(e.stderr, "%s: missing argument for option '%s'\n", e.prog, what)
	} else {
		fmt.Fprintf(e.stderr, "%s: unrecognized option '%s'\n", e.prog, what)
	}
	e.tryHelp()
}

// imgProgress is qemu-img's -p line (QEMU's util/qemu-progress.c): a
// float percentage, printed at 0 and 100 and whenever it moved by more
// than step points since the last print; end closes the line. Its
// arithmetic is float32, as QEMU's, so that the same steps print the
// same lines.
type imgProgress struct {
	w         io.Writer // nil: no -p
	step      float32
	cur, last float32
}

func newImgProgress(w io.Writer, on bool, step float32) *imgProgress {
	if !on {
		w = nil
	}
	return &imgProgress{w: w, step: step}
}

// set is qemu_progress_print(pct, 0).
func (p *imgProgress) set(pct float32) {
	if p.w == nil {
		return
	}
	p.cur = min(pct, 100)
	if p.cur > p.last+p.step || p.cur < p.last-p.step || p.cur == 0 || p.cur == 100 {
		p.last = p.cur
		fmt.Fprintf(p.w, "    (%3.2f/100%%)\r", float64(p.cur))
		flush(p.w) // qemu_progress_print flushes
	}
}

// add is qemu_progress_print(delta, 100).
func (p *imgProgress) add(delta float32) {
	scaled := float32(delta / 100 * 100) // the conversion keeps Go from fusing it into the add
	p.set(p.cur + scaled)
}

// print sets the progress to done out of total.
func (p *imgProgress) print(done, total int64) {
	if total > 0 {
		p.set(float32(100 * float64(done) / float64(total)))
	}
}

func (p *imgProgress) end() {
	if p.w != nil {
		io.WriteString(p.w, "\n")
		flush(p.w)
	}
}

// flush is fflush(stdout) where w is the buffered stdout.
func flush(w io.Writer) {
	if f, ok := w.(interface{ Flush() }); ok {
		f.Flush()
	}
}
