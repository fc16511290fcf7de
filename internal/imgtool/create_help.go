package imgtool

import (
	"fmt"
	"slices"
	"strings"
)

// createOption is one -o option as qemu-img's help lists it.
type createOption struct {
	name, kind, desc string
}

// createOptions are the -o options minivmm's formats take, with
// qemu-img 7.2's types and descriptions (it lists more: encryption,
// which minivmm does not have).
var createOptions = map[string][]createOption{
	"qcow2": {
		{"backing_file", "str", "File name of a base image"},
		{"backing_fmt", "str", "Image format of the base image"},
		{"cluster_size", "size", "qcow2 cluster size"},
		{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
		{"compression_type", "str", "Compression method used for image cluster compression"},
		{"data_file", "str", "File name of an external data file"},
		{"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image"},
		{"extended_l2", "bool (on/off)", "Extended L2 tables"},
		{"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
		{"preallocation", "str", "Preallocation mode (allowed values: off, metadata, falloc, full)"},
		{"refcount_bits", "num", "Width of a reference count entry in bits"},
		{"size", "size", "Virtual disk size"},
	},
	"raw": {
		{"size", "size", "Virtual disk size"},
	},
}

// fileCreateOptions are the file protocol's, which qemu-img adds when
// given a target filename.
var fileCreateOptions = []createOption{
	{"preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"},
}

// hasHelpOption is qemu-img's has_help_option: "help" or "?" as an option
// of its own, without a value, in any -o.
func hasHelpOption(optStrs []string) bool {
	for _, s := range optStrs {
		for _, opt := range strings.Split(strings.ReplaceAll(s, ",,", "\x00"), ",") {
			if opt == "help" || opt == "?" {
				return true
			}
		}
	}
	return false
}

// createOptionHelp is qemu-img's print_block_option_help: the format's
// options, with the protocol's merged in when filename is given.
func (e *env) createOptionHelp(format, filename string) int {
	opts, ok := createOptions[format]
	if !ok {
		fmt.Fprintf(e.stderr, "%s: Unknown file format '%s'\n", e.prog, format)
		return 1
	}
	var b strings.Builder
	if filename == "" {
		fmt.Fprintf(&b, "Supported %s options:\n", format)
	} else {
		b.WriteString("Supported options:\n")
		for _, o := range fileCreateOptions {
			if !slices.ContainsFunc(opts, func(f createOption) bool { return f.name == o.name }) {
				opts = append(slices.Clone(opts), o)
			}
		}
		slices.SortFunc(opts, func(a, b createOption) int { return strings.Compare(a.name, b.name) })
	}
	for _, o := range opts {
		fmt.Fprintf(&b, "  %-22s - %s\n", o.name+"=<"+o.kind+">", o.desc)
	}
	if filename == "" {
		b.WriteString("\nThe protocol level may support further options.\n" +
			"Specify the target filename to include those options.\n")
	}
	e.stdout.Write([]byte(b.String()))
	return 0
}
