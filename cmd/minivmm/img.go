package main

// minivmm img: qemu-img over minivmm's block layer. Each subcommand lives
// in its own img_*.go file and registers itself here, with qemu-img's
// syntax, output and exit codes.

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"minivmm/cmdline"
)

// imgProg names the tool in its messages, as qemu-img's argv[0] does.
const imgProg = "qemu-img"

// imgCommand is one `minivmm img` subcommand: it gets the arguments after
// its name and returns the exit status.
type imgCommand struct {
	run   func(args []string, stdout, stderr io.Writer) int
	usage string // one line: "info [-f fmt] [--output=ofmt] [--backing-chain] filename"
}

// imgCommands is filled by the img_*.go files' init functions.
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

func runImg(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "%s: Not enough arguments\n", imgProg)
		return imgTryHelp(stderr)
	}
	if args[0] == "-h" || args[0] == "--help" {
		return imgHelp(stdout)
	}
	cmd, ok := imgCommands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "%s: Command not found: %s\n", imgProg, args[0])
		return 1
	}
	return cmd.run(args[1:], stdout, stderr)
}

// imgCmdLine is a subcommand's command line once imgGetopt has read its
// options.
type imgCmdLine struct {
	operands []string
	addFds   []cmdline.Occurrence
}

// image is the one image file name most subcommands take, or false
// after qemu-img's error for anything else.
func (a imgCmdLine) image(stderr io.Writer) (string, bool) {
	if len(a.operands) != 1 {
		fmt.Fprintf(stderr, "%s: Expecting one image file name\n", imgProg)
		imgTryHelp(stderr)
		return "", false
	}
	return a.operands[0], true
}

// imgGetopt reads a subcommand's options the way every qemu-img command
// does, handling what they all share: -h/--help prints the help and exits
// 0, -add-fd/--add-fd (minivmm's, for fd passing) is collected, and a bad
// option gets qemu-img's message. Each other option goes to opt, which
// returns false after printing its own error. It returns the exit status
// when the command is to end now.
func imgGetopt(args []string, short string, long []longOption, stdout, stderr io.Writer,
	opt func(c rune, arg string) bool) (imgCmdLine, int, bool) {
	var errs strings.Builder
	g := &getopt{
		prog: imgProg, args: args, short: "h" + short, stderr: &errs,
		long: append([]longOption{{"help", false, 'h'}, {"add-fd", true, 'A'}}, long...),
		dash: []longOption{{"add-fd", true, 'A'}},
	}
	var a imgCmdLine
	for {
		c, arg := g.next()
		switch c {
		case 0:
			a.operands = g.operands
			return a, 0, true
		case '?':
			imgOptionError(g, errs.String(), stderr)
			return a, 1, false
		case 'h':
			return a, imgHelp(stdout), false
		case 'A':
			a.addFds = append(a.addFds, cmdline.Occurrence{Name: "add-fd", Value: arg})
		default:
			if !opt(c, arg) {
				return a, 1, false
			}
		}
	}
}

// imgOptionError turns getopt's glibc message into qemu-img's, which names
// the argument as given (argv[optind-1]). Inside a cluster of short
// options that argument is not yet the one at fault (qemu-img then names
// the one before it, even the command name), so there the option itself is
// named.
func imgOptionError(g *getopt, glibcMsg string, stderr io.Writer) {
	var what string
	if g.sub > 0 {
		what = "-" + string(g.args[g.i][g.sub-1])
	} else {
		what = g.args[g.i-1]
	}
	if strings.Contains(glibcMsg, "requires an argument") {
		fmt.Fprintf(stderr, "%s: missing argument for option '%s'\n", imgProg, what)
	} else {
		fmt.Fprintf(stderr, "%s: unrecognized option '%s'\n", imgProg, what)
	}
	imgTryHelp(stderr)
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
	}
}
