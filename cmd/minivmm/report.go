package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// reporter writes the VMM's messages as QEMU's error_report does:
// "[timestamp ][guest ]minivmm: text", the prefixes per -msg.
type reporter struct {
	mu        sync.Mutex
	w         io.Writer
	timestamp bool
	guest     string // -name's guest, when -msg guest-name=on
	now       func() time.Time
}

func (r *reporter) Printf(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var prefix string
	if r.timestamp {
		prefix = r.now().UTC().Format("2006-01-02T15:04:05.000000Z") + " "
	}
	if r.guest != "" {
		prefix += r.guest + " "
	}
	fmt.Fprintf(r.w, "%sminivmm: %s\n", prefix, fmt.Sprintf(format, a...))
}

// setWriter sends later messages to w (the -D log file).
// Println prints a line as it is, with no prefix: QEMU's hints follow
// their error that way.
func (r *reporter) Println(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintln(r.w, line)
}

func (r *reporter) setWriter(w io.Writer) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.w = w
}
