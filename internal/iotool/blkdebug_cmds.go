package iotool

// The blkdebug commands need a blkdebug node in the image's graph.
// minivmm has no blkdebug driver yet: they fail as qemu-io's do on an
// image without one, except wait_break, on which qemu-io waits forever.

func (t *ioTool) breakCmd([]string) error {
	t.printf("Could not set breakpoint: Operation not supported\n")
	return errCommand
}

func (t *ioTool) removeBreak(argv []string) error {
	t.printf("Could not remove breakpoint %s: Operation not supported\n", argv[1])
	return errCommand
}

func (t *ioTool) resume([]string) error {
	t.printf("Could not resume request: Operation not supported\n")
	return errCommand
}

func (t *ioTool) waitBreak(argv []string) error {
	t.printf("Could not wait for request %s: Operation not supported\n", argv[1])
	return errCommand
}
