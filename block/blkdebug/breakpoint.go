package blkdebug

import (
	"slices"
	"syscall"
)

// Breakpoints (qemu-io's break, resume, wait_break, remove_break): a
// breakpoint on an event suspends the request that reaches it, once,
// until resumed. The request blocks where the format reported the event,
// holding whatever the format holds there, as QEMU's coroutine yields.

type breakpoint struct{ event, tag string }

type suspendedReq struct {
	tag    string
	resume chan struct{}
}

// SetNotify gives the function told "blkdebug: Suspended request 'TAG'"
// and "blkdebug: Resuming request 'TAG'", which QEMU prints on stdout.
func (img *image) SetNotify(f func(msg string)) {
	img.mu.Lock()
	img.notify = f
	img.mu.Unlock()
}

func (img *image) say(msg string) {
	img.mu.Lock()
	f := img.notify
	img.mu.Unlock()
	if f != nil {
		f(msg)
	}
}

// Break sets a breakpoint; an unknown event is ENOENT, as QEMU's.
func (img *image) Break(event, tag string) error {
	if !knownEvent(event) {
		return syscall.ENOENT
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	img.breaks = append(img.breaks, breakpoint{event, tag})
	return nil
}

// RemoveBreak resumes the requests suspended under tag and removes its
// breakpoints: ENOENT unless there was a breakpoint to remove (a
// request resumed alone does not count, as in QEMU).
func (img *image) RemoveBreak(tag string) error {
	for img.Resume(tag) == nil {
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	n := len(img.breaks)
	img.breaks = slices.DeleteFunc(img.breaks, func(b breakpoint) bool { return b.tag == tag })
	if len(img.breaks) == n {
		return syscall.ENOENT
	}
	return nil
}

// Resume lets the first request suspended under tag go on.
func (img *image) Resume(tag string) error {
	img.mu.Lock()
	i := slices.IndexFunc(img.suspended, func(s *suspendedReq) bool { return s.tag == tag })
	if i < 0 {
		img.mu.Unlock()
		return syscall.ENOENT
	}
	s := img.suspended[i]
	img.suspended = slices.Delete(img.suspended, i, i+1)
	img.mu.Unlock()
	img.say("blkdebug: Resuming request '" + tag + "'\n")
	close(s.resume)
	return nil
}

// Suspended says whether a request waits under tag.
func (img *image) Suspended(tag string) bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	return slices.ContainsFunc(img.suspended, func(s *suspendedReq) bool { return s.tag == tag })
}

// takeBreaks removes and returns the breakpoints on event; mu is held.
func (img *image) takeBreaks(event string) []breakpoint {
	var hit []breakpoint
	img.breaks = slices.DeleteFunc(img.breaks, func(b breakpoint) bool {
		if b.event == event {
			hit = append(hit, b)
			return true
		}
		return false
	})
	return hit
}

// suspend blocks the calling request at each breakpoint hit, in turn.
func (img *image) suspend(hit []breakpoint) {
	for _, b := range hit {
		img.say("blkdebug: Suspended request '" + b.tag + "'\n")
		s := &suspendedReq{tag: b.tag, resume: make(chan struct{})}
		img.mu.Lock()
		img.suspended = append(img.suspended, s)
		img.mu.Unlock()
		<-s.resume
	}
}
