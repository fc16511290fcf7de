package cmdline

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// Errors of FlagSet.Parse, each prefixed with the argument as given.
var (
	ErrInvalidOption    = errors.New("invalid option")
	ErrRequiresArgument = errors.New("requires an argument")
	// QEMU opens a non-option argument as a disk image; minivmm does not.
	ErrPositional = errors.New("disk image arguments are not supported, use -blockdev")
)

// Occurrence is one option as it appeared on the command line.
type Occurrence struct {
	Name  string // without dashes
	Value string // empty for options that take no argument
}

// Wrap turns err into an *OptionError naming this occurrence.
func (o Occurrence) Wrap(err error) error {
	return &OptionError{Option: o.Name, Value: o.Value, Err: err}
}

// FlagSet parses a QEMU-style command line with pflag. QEMU spells long
// options with one dash ("-add-fd fd=3,set=2", "-S"); the double-dash
// forms pflag knows ("--add-fd V", "--add-fd=V", and also "-add-fd=V")
// work too. Options with an argument may repeat and keep every argument
// verbatim (no splitting on commas); Occurrences gives all options in
// command-line order so that they can be processed in order like QEMU.
type FlagSet struct {
	fs    *pflag.FlagSet
	order []Occurrence
}

// NewFlagSet returns an empty FlagSet; name is used in usage texts.
func NewFlagSet(name string) *FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, the caller prints them
	fs.Usage = func() {}
	return &FlagSet{fs: fs}
}

// StringArray registers an option that takes an argument and may repeat.
func (f *FlagSet) StringArray(name, usage string) *[]string {
	return f.fs.StringArray(name, nil, usage)
}

// Bool registers an option that takes no argument.
func (f *FlagSet) Bool(name, usage string) *bool {
	return f.fs.Bool(name, false, usage)
}

// PFlags returns the underlying pflag set, e.g. for FlagUsages.
func (f *FlagSet) PFlags() *pflag.FlagSet { return f.fs }

// Occurrences lists the parsed options in command-line order.
func (f *FlagSet) Occurrences() []Occurrence { return f.order }

// Parse parses args (without the program name). Call it once.
func (f *FlagSet) Parse(args []string) error {
	args, err := f.normalize(args)
	if err != nil {
		return err
	}
	err = f.fs.ParseAll(args, func(fl *pflag.Flag, v string) error {
		o := Occurrence{Name: fl.Name, Value: v}
		if takesNoArg(fl) {
			o.Value = ""
		}
		f.order = append(f.order, o)
		return f.fs.Set(fl.Name, v)
	})
	if err != nil {
		return fmt.Errorf("parsing options: %w", err)
	}
	if rest := f.fs.Args(); len(rest) > 0 { // what followed "--"
		return fmt.Errorf("%s: %w", rest[0], ErrPositional)
	}
	return nil
}

// normalize rewrites each option to pflag's "--name" form and reports
// the errors in QEMU's words, first one first. It keeps track of which
// arguments are option values, so "-name -foo" names the guest "-foo"
// as in QEMU, and it leaves everything after "--" alone.
func (f *FlagSet) normalize(args []string) ([]string, error) {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...), nil
		}
		if !strings.HasPrefix(a, "-") {
			return nil, fmt.Errorf("%s: %w", a, ErrPositional)
		}
		body := strings.TrimPrefix(a[1:], "-")
		name, _, inline := strings.Cut(body, "=")
		fl := f.fs.Lookup(name)
		if name == "" || fl == nil || inline && takesNoArg(fl) {
			return nil, fmt.Errorf("%s: %w", a, ErrInvalidOption)
		}
		out = append(out, "--"+body)
		if inline || takesNoArg(fl) {
			continue
		}
		if i+1 == len(args) {
			return nil, fmt.Errorf("%s: %w", a, ErrRequiresArgument)
		}
		i++
		out = append(out, args[i])
	}
	return out, nil
}

func takesNoArg(fl *pflag.Flag) bool { return fl.NoOptDefVal != "" }
