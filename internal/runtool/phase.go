package runtool

import (
	"fmt"
	"strings"
	"time"
)

// phase prints what just happened, at its time since the VMM started,
// and the fds the VMM holds on the images next to what it should hold
// (the images' open and rw marks); a difference fails the run.
func (r *runner) phase(what string) {
	t, err := readFds(r.pid, r.allImages(), r.members)
	var b strings.Builder
	fmt.Fprintf(&b, "%8s  %s\n", fmt.Sprintf("+%.2fs", time.Since(r.t0).Seconds()), what)
	b.WriteString("          fds:")
	if err != nil {
		fmt.Fprintf(&b, " %v", err)
		r.fdsOK.Store(false)
	}
	n := 0
	for _, img := range r.allImages() {
		want := "-"
		if img.open {
			want = "RO"
			if img.rw {
				want = "RW"
			}
		}
		got := t.modes(img)
		if got == "-" && want == "-" {
			continue
		}
		if n > 0 {
			b.WriteString(",")
		}
		n++
		fmt.Fprintf(&b, " %s %s", img.name(), got)
		if got != want {
			fmt.Fprintf(&b, " (expected %s: FAILED)", want)
			r.fdsOK.Store(false)
		}
	}
	if n == 0 {
		b.WriteString(" none on the images")
	}
	if r.membersHeld >= 0 && t.members != r.membersHeld {
		fmt.Fprintf(&b, "; %d fdset fds (expected %d: FAILED)", t.members, r.membersHeld)
		r.fdsOK.Store(false)
	}
	r.printf("%s\n", b.String())
}

// ms renders a duration in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }
