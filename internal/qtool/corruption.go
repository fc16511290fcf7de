package qtool

import (
	"fmt"
	"io"
	"sync"

	"minivmm/block"
)

// CorruptionPrinter prints corruption a format finds as QEMU's
// qcow2_signal_corruption does (qemu-img and qemu-io print it on
// stderr): once per node, fatal (the image marked corrupt) or not.
func CorruptionPrinter(w io.Writer) func(block.Corruption) {
	var mu sync.Mutex
	told := map[string]bool{}
	return func(c block.Corruption) {
		mu.Lock()
		defer mu.Unlock()
		if told[c.Node] {
			return
		}
		told[c.Node] = true
		if c.Fatal {
			fmt.Fprintf(w, "qcow2: Marking image as corrupt: %s; further corruption events will be suppressed\n", c.Msg)
		} else {
			fmt.Fprintf(w, "qcow2: Image is corrupt: %s; further non-fatal corruption events will be suppressed\n", c.Msg)
		}
	}
}
