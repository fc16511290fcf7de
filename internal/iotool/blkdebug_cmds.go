package iotool

import (
	"errors"
	"syscall"
	"time"

	"minivmm/qemuopen"
)

// breaker is a node that can suspend requests at events (blkdebug).
type breaker interface {
	SetNotify(func(msg string))
	Break(event, tag string) error
	RemoveBreak(tag string) error
	Resume(tag string) error
	Suspended(tag string) bool
}

// findBreaker walks down from the open node through each node's "file"
// or "image" child to the first breaker, as QEMU's
// bdrv_debug_breakpoint does; nil: none (ENOTSUP).
func (t *ioTool) findBreaker() breaker {
	for n := t.node; n != nil; {
		if b, ok := n.Image().(breaker); ok {
			b.SetNotify(func(msg string) { t.printf("%s", msg) })
			return b
		}
		next := n.Child("file")
		if next == nil {
			next = n.Child("image")
		}
		n = next
	}
	return nil
}

func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return qemuopen.Strerror(errno)
	}
	return err.Error()
}

func (t *ioTool) breakCmd(argv []string) error {
	err := error(syscall.ENOTSUP)
	if b := t.findBreaker(); b != nil {
		err = b.Break(argv[1], argv[2])
	}
	if err != nil {
		t.printf("Could not set breakpoint: %s\n", errnoText(err))
		return errCommand
	}
	return nil
}

func (t *ioTool) removeBreak(argv []string) error {
	err := error(syscall.ENOTSUP)
	if b := t.findBreaker(); b != nil {
		err = b.RemoveBreak(argv[1])
	}
	if err != nil {
		t.printf("Could not remove breakpoint %s: %s\n", argv[1], errnoText(err))
		return errCommand
	}
	return nil
}

func (t *ioTool) resume(argv []string) error {
	err := error(syscall.ENOTSUP)
	if b := t.findBreaker(); b != nil {
		err = b.Resume(argv[1])
	}
	if err != nil {
		t.printf("Could not resume request: %s\n", errnoText(err))
		return errCommand
	}
	return nil
}

// waitBreak waits until a request is suspended under the tag; without a
// blkdebug node qemu-io would wait forever: that is refused instead.
func (t *ioTool) waitBreak(argv []string) error {
	b := t.findBreaker()
	if b == nil {
		t.printf("Could not wait for request %s: Operation not supported\n", argv[1])
		return errCommand
	}
	for !b.Suspended(argv[1]) {
		time.Sleep(time.Millisecond)
	}
	return nil
}
