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

// createOptions are qemu-img 7.2's -o options of each format, with its
// types and descriptions. The encryption ones are listed because qemu-img
// lists them; minivmm refuses them when used (encryption is not in it).
var createOptions = map[string][]createOption{
	"qcow2": {
		{"backing_file", "str", "File name of a base image"},
		{"backing_fmt", "str", "Image format of the base image"},
		{"cluster_size", "size", "qcow2 cluster size"},
		{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
		{"compression_type", "str", "Compression method used for image cluster compression"},
		{"data_file", "str", "File name of an external data file"},
		{"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image"},
		{"encrypt.cipher-alg", "str", "Name of encryption cipher algorithm"},
		{"encrypt.cipher-mode", "str", "Name of encryption cipher mode"},
		{"encrypt.format", "str", "Encrypt the image, format choices: 'aes', 'luks'"},
		{"encrypt.hash-alg", "str", "Name of encryption hash algorithm"},
		{"encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"},
		{"encrypt.ivgen-alg", "str", "Name of IV generator algorithm"},
		{"encrypt.ivgen-hash-alg", "str", "Name of IV generator hash algorithm"},
		{"encrypt.key-secret", "str", "ID of secret providing qcow AES key or LUKS passphrase"},
		{"encryption", "bool (on/off)", "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"},
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
	{"extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"},
	{"nocow", "bool (on/off)", "Turn off copy-on-write (valid only on btrfs)"},
	{"preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"},
}

// amendOptions are qemu-img 7.2's amend options (the format's amend_opts),
// as `amend -o help` lists them; the encryption ones are refused when used.
var amendOptions = map[string][]createOption{
	"qcow2": {
		{"backing_file", "str", "File name of a base image"},
		{"backing_fmt", "str", "Image format of the base image"},
		{"compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"},
		{"data_file", "str", "File name of an external data file"},
		{"data_file_raw", "bool (on/off)", "The external data file must stay valid as a raw image"},
		{"encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"},
		{"encrypt.keyslot", "num", "Select a single keyslot to modify explicitly"},
		{"encrypt.new-secret", "str", "New secret to set in the matching keyslots. Empty string to erase"},
		{"encrypt.old-secret", "str", "Select all keyslots that match this password"},
		{"encrypt.state", "str", "Select new state of affected keyslots (active/inactive)"},
		{"lazy_refcounts", "bool (on/off)", "Postpone refcount updates"},
		{"refcount_bits", "num", "Width of a reference count entry in bits"},
		{"size", "size", "Virtual disk size"},
	},
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
		fmt.Fprintf(e.stderr, "%s: %s\n", e.prog, noCreateError(format))
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
	writeOptionLines(&b, opts)
	if filename == "" {
		b.WriteString("\nThe protocol level may support further options.\n" +
			"Specify the target filename to include those options.\n")
	}
	e.stdout.Write([]byte(b.String()))
	return 0
}

// amendOptionHelp is qemu-img's print_amend_option_help.
func (e *env) amendOptionHelp(format string) int {
	opts, ok := amendOptions[format]
	if !ok {
		if knownFormatName(format) {
			fmt.Fprintf(e.stderr, "%s: Format driver '%s' does not support option amendment\n", e.prog, format)
		} else {
			fmt.Fprintf(e.stderr, "%s: Unknown file format '%s'\n", e.prog, format)
		}
		return 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Amend options for '%s':\n", format)
	writeOptionLines(&b, opts)
	e.stdout.Write([]byte(b.String()))
	return 0
}

// writeOptionLines is qemu_opts_print_help's list.
func writeOptionLines(b *strings.Builder, opts []createOption) {
	for _, o := range opts {
		fmt.Fprintf(b, "  %-22s - %s\n", o.name+"=<"+o.kind+">", o.desc)
	}
}

// accumulateOption is qemu-img's accumulate_options: an -o value that is
// empty, starts with a comma or ends in an unescaped comma is refused as
// it is read, before anything else is looked at.
func (e *env) accumulateOption(optStrs *[]string, arg string) bool {
	trailing := len(arg) - len(strings.TrimRight(arg, ","))
	if arg == "" || arg[0] == ',' || trailing%2 != 0 {
		fmt.Fprintf(e.stderr, "%s: Invalid option list: %s\n", e.prog, arg)
		return false
	}
	*optStrs = append(*optStrs, arg)
	return true
}

// qemuNoCreate are the drivers of QEMU 7.2 that have no image creation
// (no create_opts): the read-only formats and the filters.
var qemuNoCreate = []string{
	"blkdebug", "blklogwrites", "blkverify", "bochs", "cloop", "compress",
	"copy-before-write", "copy-on-read", "dmg", "null-aio", "null-co",
	"preallocate", "quorum", "replication", "snapshot-access", "throttle",
	"vvfat",
}

// noCreateError is the refusal of a format minivmm cannot create: qemu-img's
// for one QEMU cannot create either (bochs); else, as for a format
// qemu-img does not know, "Unknown file format" (qcow, vmdk, luks: QEMU's
// that minivmm does not have).
func noCreateError(format string) error {
	if slices.Contains(qemuNoCreate, format) {
		return fmt.Errorf("Format driver '%s' does not support image creation", format)
	}
	return fmt.Errorf("Unknown file format '%s'", format)
}
