// Package qtool is what minivmm's qemu-img and qemu-io share at their
// edge: GNU getopt, QEMU's wording of errors, opening an image as the
// tools' flags describe it, and -add-fd.
package qtool

import (
	"fmt"
	"io"
	"strings"
)

// Getopt parses arguments the way GNU getopt_long does, which is how
// qemu-io reads both its own command line and each command's arguments:
// options may come after operands (operands are collected in order),
// "--" ends the options, short options cluster ("-rn", "-P0xab"), and
// long options take "=value" or the next argument and may be shortened
// to any unambiguous prefix. Errors are printed to stderr in glibc's
// words, prefixed with prog, and returned as '?'.
type Getopt struct {
	Prog   string
	Args   []string // without the program or command name
	Short  string   // optstring: a letter, followed by ':' when it takes an argument
	Long   []LongOption
	Dash   []LongOption // long options also spelled with a single dash (-add-fd)
	Stderr io.Writer

	i, sub   int      // next argument; position inside a cluster of short options
	Operands []string // once Next has returned 0
}

// LongOption is one --name option.
type LongOption struct {
	Name   string
	HasArg bool
	Val    rune // what Next returns for it
}

// Next returns the next option and its argument; 0 when there are no
// more options (the operands are then in g.Operands), '?' after printing
// an error.
func (g *Getopt) Next() (rune, string) {
	for {
		if g.sub > 0 {
			return g.shortOpt()
		}
		if g.i >= len(g.Args) {
			return 0, ""
		}
		a := g.Args[g.i]
		switch {
		case a == "--":
			g.Operands = append(g.Operands, g.Args[g.i+1:]...)
			g.i = len(g.Args)
			return 0, ""
		case len(a) < 2 || a[0] != '-':
			g.Operands = append(g.Operands, a)
			g.i++
		case a[1] == '-':
			g.i++
			return g.longOpt(a[2:])
		default:
			for _, lo := range g.Dash {
				if name, val, hasVal := strings.Cut(a[1:], "="); name == lo.Name {
					g.i++
					return g.takeLong(lo, "-", val, hasVal)
				}
			}
			g.sub = 1
		}
	}
}

func (g *Getopt) shortOpt() (rune, string) {
	a := g.Args[g.i]
	c := a[g.sub]
	g.sub++
	atEnd := g.sub >= len(a)
	if atEnd {
		g.i++
		g.sub = 0
	}
	idx := strings.IndexByte(g.Short, c)
	if c == ':' || idx < 0 {
		fmt.Fprintf(g.Stderr, "%s: invalid option -- '%c'\n", g.Prog, c)
		return '?', ""
	}
	if idx+1 >= len(g.Short) || g.Short[idx+1] != ':' {
		return rune(c), ""
	}
	if !atEnd {
		arg := a[g.sub:]
		g.i++
		g.sub = 0
		return rune(c), arg
	}
	if g.i >= len(g.Args) {
		fmt.Fprintf(g.Stderr, "%s: option requires an argument -- '%c'\n", g.Prog, c)
		return '?', ""
	}
	arg := g.Args[g.i]
	g.i++
	return rune(c), arg
}

func (g *Getopt) longOpt(body string) (rune, string) {
	name, val, hasVal := strings.Cut(body, "=")
	var found []LongOption
	for _, lo := range g.Long {
		if lo.Name == name {
			found = []LongOption{lo}
			break
		}
		if strings.HasPrefix(lo.Name, name) {
			found = append(found, lo)
		}
	}
	switch len(found) {
	case 0:
		fmt.Fprintf(g.Stderr, "%s: unrecognized option '--%s'\n", g.Prog, body)
		return '?', ""
	case 1:
		return g.takeLong(found[0], "--", val, hasVal)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: option '--%s' is ambiguous; possibilities:", g.Prog, body)
	for _, lo := range found {
		fmt.Fprintf(&b, " '--%s'", lo.Name)
	}
	b.WriteByte('\n')
	io.WriteString(g.Stderr, b.String())
	return '?', ""
}

func (g *Getopt) takeLong(lo LongOption, dashes, val string, hasVal bool) (rune, string) {
	switch {
	case !lo.HasArg && hasVal:
		fmt.Fprintf(g.Stderr, "%s: option '%s%s' doesn't allow an argument\n", g.Prog, dashes, lo.Name)
		return '?', ""
	case !lo.HasArg || hasVal:
		return lo.Val, val
	case g.i >= len(g.Args):
		fmt.Fprintf(g.Stderr, "%s: option '%s%s' requires an argument\n", g.Prog, dashes, lo.Name)
		return '?', ""
	}
	g.i++
	return lo.Val, g.Args[g.i-1]
}

// Culprit is the option the last '?' from Next was about, as a message
// names it: the argument as given (qemu-img's argv[optind-1]) or, inside
// a cluster of short options, the option itself.
func (g *Getopt) Culprit() string {
	if g.sub > 0 {
		return "-" + string(g.Args[g.i][g.sub-1])
	}
	return g.Args[g.i-1]
}

// Opt is a LongOption.
func Opt(name string, hasArg bool, val rune) LongOption {
	return LongOption{Name: name, HasArg: hasArg, Val: val}
}
