package imgtool

import (
	"fmt"

	"minivmm/cmdline"
)

// cvtnum is qemu-img's cvtnum: a size with an optional suffix, or its
// error naming what ("start offset") and false.
func (e *env) cvtnum(what, arg string) (int64, bool) {
	n, err := cmdline.ParseSize(arg)
	if err != nil || n > 1<<63-1 {
		fmt.Fprintf(e.stderr, "%s: Invalid %s specified. You may use k, M, G, T, P or E suffixes for\n"+
			"%s: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.\n", e.prog, what, e.prog)
		return 0, false
	}
	return int64(n), true
}
