// Package cmdline parses minivmm's QEMU-compatible command line: the
// option scanner (single-dash long options, processed in order), QEMU's
// two option-string syntaxes (QemuOpts "key=value,..." and keyval, the
// dotted syntax of -blockdev), and the options minivmm understands
// (-add-fd, -qmp, -chardev, -mon, -name, -machine, -display).
//
// Error texts follow QEMU 7.2 where QEMU has one, because management
// layers and humans compare them; errors are returned, never printed.
package cmdline
