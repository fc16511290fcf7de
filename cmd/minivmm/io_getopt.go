package main

import (
	"fmt"
	"io"
	"strings"
)

// getopt parses arguments the way GNU getopt_long does, which is how
// qemu-io reads both its own command line and each command's arguments:
// options may come after operands (operands are collected in order),
// "--" ends the options, short options cluster ("-rn", "-P0xab"), and
// long options take "=value" or the next argument and may be shortened
// to any unambiguous prefix. Errors are printed to stderr in glibc's
// words, prefixed with prog, and returned as '?'.
type getopt struct {
	prog   string
	args   []string // without the program or command name
	short  string   // optstring: a letter, followed by ':' when it takes an argument
	long   []longOption
	dash   []longOption // long options also spelled with a single dash (-add-fd)
	stderr io.Writer

	i, sub   int // next argument; position inside a cluster of short options
	operands []string
}

type longOption struct {
	name   string
	hasArg bool
	val    rune // what next returns for it
}

// next returns the next option and its argument; 0 when there are no
// more options (the operands are then in g.operands), '?' after printing
// an error.
func (g *getopt) next() (rune, string) {
	for {
		if g.sub > 0 {
			return g.shortOpt()
		}
		if g.i >= len(g.args) {
			return 0, ""
		}
		a := g.args[g.i]
		switch {
		case a == "--":
			g.operands = append(g.operands, g.args[g.i+1:]...)
			g.i = len(g.args)
			return 0, ""
		case len(a) < 2 || a[0] != '-':
			g.operands = append(g.operands, a)
			g.i++
		case a[1] == '-':
			g.i++
			return g.longOpt(a[2:])
		default:
			for _, lo := range g.dash {
				if name, val, hasVal := strings.Cut(a[1:], "="); name == lo.name {
					g.i++
					return g.takeLong(lo, "-", val, hasVal)
				}
			}
			g.sub = 1
		}
	}
}

func (g *getopt) shortOpt() (rune, string) {
	a := g.args[g.i]
	c := a[g.sub]
	g.sub++
	atEnd := g.sub >= len(a)
	if atEnd {
		g.i++
		g.sub = 0
	}
	idx := strings.IndexByte(g.short, c)
	if c == ':' || idx < 0 {
		fmt.Fprintf(g.stderr, "%s: invalid option -- '%c'\n", g.prog, c)
		return '?', ""
	}
	if idx+1 >= len(g.short) || g.short[idx+1] != ':' {
		return rune(c), ""
	}
	if !atEnd {
		arg := a[g.sub:]
		g.i++
		g.sub = 0
		return rune(c), arg
	}
	if g.i >= len(g.args) {
		fmt.Fprintf(g.stderr, "%s: option requires an argument -- '%c'\n", g.prog, c)
		return '?', ""
	}
	arg := g.args[g.i]
	g.i++
	return rune(c), arg
}

func (g *getopt) longOpt(body string) (rune, string) {
	name, val, hasVal := strings.Cut(body, "=")
	var found []longOption
	for _, lo := range g.long {
		if lo.name == name {
			found = []longOption{lo}
			break
		}
		if strings.HasPrefix(lo.name, name) {
			found = append(found, lo)
		}
	}
	switch len(found) {
	case 0:
		fmt.Fprintf(g.stderr, "%s: unrecognized option '--%s'\n", g.prog, body)
		return '?', ""
	case 1:
		return g.takeLong(found[0], "--", val, hasVal)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: option '--%s' is ambiguous; possibilities:", g.prog, body)
	for _, lo := range found {
		fmt.Fprintf(&b, " '--%s'", lo.name)
	}
	b.WriteByte('\n')
	io.WriteString(g.stderr, b.String())
	return '?', ""
}

func (g *getopt) takeLong(lo longOption, dashes, val string, hasVal bool) (rune, string) {
	switch {
	case !lo.hasArg && hasVal:
		fmt.Fprintf(g.stderr, "%s: option '%s%s' doesn't allow an argument\n", g.prog, dashes, lo.name)
		return '?', ""
	case !lo.hasArg || hasVal:
		return lo.val, val
	case g.i >= len(g.args):
		fmt.Fprintf(g.stderr, "%s: option '%s%s' requires an argument\n", g.prog, dashes, lo.name)
		return '?', ""
	}
	g.i++
	return lo.val, g.args[g.i-1]
}
