package qtool

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/qemuopen"
)

// Errno finds the errno beneath a block layer error, as QEMU's negative
// return values carry it; ENOTSUP for ErrNotSupported, EIO when there is
// none.
func Errno(err error) unix.Errno {
	var errno unix.Errno
	switch {
	case errors.As(err, &errno):
		return errno
	case errors.Is(err, block.ErrNotSupported):
		return unix.ENOTSUP
	}
	return unix.EIO
}

// Strerror is the C library's text for err's errno.
func Strerror(err error) string { return qemuopen.Strerror(Errno(err)) }

// Message is the text of an error for an error_report line: a block
// layer error without the node and request it names, which QEMU's tools
// do not show either, and the error's hint (a lock conflict's "Is another
// process using the image [...]?") on a line of its own, as QEMU's
// error_append_hint prints it.
func Message(err error) string {
	msg := message(err)
	var h interface{ Hint() string }
	if errors.As(err, &h) {
		msg += "\n" + h.Hint()
	}
	return msg
}

func message(err error) string {
	var pf *block.ProbedFormatError
	if errors.As(err, &pf) {
		return fmt.Sprintf("Image format was not specified for '%s' and probing guessed %s; "+
			"name the format (-f %s) to open it for writing, or open it read-only (-r)", pf.Filename, pf.Format, pf.Format)
	}
	var be *block.Error
	if errors.As(err, &be) {
		if errors.Is(be.Err, unix.EPERM) && be.Op == "take write permission" {
			return "Block node is read-only"
		}
		return be.Err.Error()
	}
	return err.Error()
}

// CloseMessages words what closing a graph failed with, one line per
// node that failed (block.Graph.Close joins them).
func CloseMessages(err error) []string {
	if err == nil {
		return nil
	}
	var msgs []string
	for _, e := range flatten(err) {
		// A driver that names the steps of its close (qcow2's caches, as
		// QEMU's qcow2 reports them) has a line per step that failed.
		if steps := closeSteps(e); len(steps) > 0 {
			for _, s := range steps {
				msgs = append(msgs, s.CloseStep()+": "+causeMessage(s.(error)))
			}
			continue
		}
		// An errno beneath is what the user can act on (a full or
		// failing disk), in the C library's words; the chain above it
		// names internal nodes and offsets, which QEMU's tools do not show.
		msg := Message(e)
		var errno unix.Errno
		if errors.As(e, &errno) {
			msg = Strerror(e)
		}
		var be *block.Error
		if errors.As(e, &be) && !strings.HasPrefix(be.Node, "#") {
			msg = fmt.Sprintf("Failed to close node '%s': %s", be.Node, msg)
		} else {
			msg = "Failed to close the image: " + msg
		}
		msgs = append(msgs, msg)
	}
	return msgs
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// closeStep is an error naming the step of a close that failed.
type closeStep interface{ CloseStep() string }

// closeSteps finds the close steps in err's tree.
func closeSteps(err error) []closeStep {
	if s, ok := err.(closeStep); ok {
		return []closeStep{s}
	}
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		var out []closeStep
		for _, e := range u.Unwrap() {
			out = append(out, closeSteps(e)...)
		}
		return out
	case interface{ Unwrap() error }:
		if e := u.Unwrap(); e != nil {
			return closeSteps(e)
		}
	}
	return nil
}

// causeMessage is what a close step failed with: an errno in the C
// library's words.
func causeMessage(step error) string {
	e := errors.Unwrap(step)
	if e == nil {
		return Message(step)
	}
	var errno unix.Errno
	if errors.As(e, &errno) {
		return Strerror(e)
	}
	return Message(e)
}
