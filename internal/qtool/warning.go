package qtool

import (
	"fmt"
	"io"

	"minivmm/block"
)

// WarningPrinter prints a driver's warnings as QEMU's drivers print them
// on stderr: the message and the errno's text, without the program's
// name.
func WarningPrinter(w io.Writer) func(block.Warning) {
	return func(wn block.Warning) {
		if wn.Err == nil { // a message of its own (a check's, at a repair)
			fmt.Fprintln(w, wn.Msg)
			return
		}
		fmt.Fprintf(w, "%s: %s\n", wn.Msg, Strerror(wn.Err))
	}
}
