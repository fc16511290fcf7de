package iotool

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"minivmm/internal/qtool"
)

// alloc says how many bytes from an offset (512 unless a count is
// given) are allocated in the image itself, not in its backing file;
// the count shrinks to what lies before the end of the image.
func (t *ioTool) alloc(argv []string) error {
	off, ok := t.num(argv[1])
	if !ok {
		return errCommand
	}
	count := int64(512)
	if len(argv) == 3 {
		if count, ok = t.num(argv[2]); !ok {
			return errCommand
		}
	}
	start := off
	var sum int64
	for remaining := count; remaining > 0; {
		var n int64
		allocated := false
		if off < t.node.Length() {
			st, num, err := t.node.BlockStatus(off, min(remaining, t.node.Length()-off))
			if err != nil {
				t.printf("is_allocated failed: %s\n", qtool.Strerror(err))
				return errCommand
			}
			n, allocated = num, st.Allocated
		}
		if n == 0 {
			count -= remaining
			break
		}
		if allocated {
			sum += n
		}
		off += n
		remaining -= n
	}
	t.printf("%d/%d bytes allocated at offset %s\n", sum, count, cvtstr(float64(start)))
	return nil
}

// preallocModes are QEMU's PreallocMode values.
var preallocModes = map[string]bool{"off": true, "metadata": true, "falloc": true, "full": true}

func (t *ioTool) truncate(argv []string) error {
	ct := findCommand("truncate")
	g := t.getopt(argv, "m:")
	prealloc := "off"
	for {
		c, arg := g.Next()
		if c == 0 {
			break
		}
		switch c {
		case 'm':
			if !preallocModes[arg] {
				fmt.Fprintf(t.stderr, "%s: Invalid preallocation mode '%s'\n", t.prog, arg)
				return errCommand
			}
			prealloc = arg
		default:
			return t.usage(ct)
		}
	}
	if len(g.Operands) == 0 {
		return t.usage(ct)
	}
	size, ok := t.num(g.Operands[0])
	if !ok {
		return errCommand
	}
	if err := t.truncateTo(size, prealloc); err != nil {
		fmt.Fprintf(t.stderr, "%s: %s\n", t.prog, err)
		return errCommand
	}
	return nil
}

// sleep waits, with asynchronous requests running on, as qemu-io's
// (strtol with base 0: decimal, 0x hex, 0 octal).
func (t *ioTool) sleep(argv []string) error {
	ms, err := strconv.ParseInt(argv[1], 0, 64)
	if err != nil || ms < 0 {
		t.printf("%s is not a valid number\n", argv[1])
		return errCommand
	}
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return nil
}

// abort ends the process with SIGABRT at once, as abort(3): standard
// output still buffered is lost, nothing is closed (what a crash leaves
// of the image is what a script calling it wants to see).
func (t *ioTool) abort([]string) error {
	dieFromSignal(unix.SIGABRT)
	return nil
}

// qemuHandledSignals are those qemu-io catches or ignores, so that
// raising them goes on (the others take their default action).
var qemuHandledSignals = map[unix.Signal]bool{
	unix.SIGUSR1: true, unix.SIGPIPE: true, unix.SIGALRM: true, unix.SIGIO: true,
	unix.SIGCHLD: true, unix.SIGURG: true, unix.SIGWINCH: true, unix.SIGCONT: true,
}

// sigraise raises a signal as qemu-io's: output flushed first.
func (t *ioTool) sigraise(argv []string) error {
	sig, ok := t.num(argv[1])
	if !ok {
		return errCommand
	}
	if sig > 65 { // NSIG
		t.printf("signal argument '%s' is too large to be a valid signal\n", argv[1])
		return errCommand
	}
	t.out.Flush()
	s := unix.Signal(sig)
	if sig == 0 || sig == 65 || qemuHandledSignals[s] {
		return nil // raise(0) and raise(NSIG) do nothing here
	}
	dieFromSignal(s)
	return nil
}

// dieFromSignal raises sig with its default action (Go's runtime would
// otherwise turn some into a stack dump and exit status 2) and, should
// the signal stop rather than end the process, returns once continued.
func dieFromSignal(sig unix.Signal) {
	runtime.LockOSThread() // the mask and the signal are this thread's
	defer runtime.UnlockOSThread()
	if sig != unix.SIGKILL && sig != unix.SIGSTOP {
		// struct kernel_sigaction with SIG_DFL.
		var act [4]uint64
		unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	}
	var set unix.Sigset_t
	set.Val[(sig-1)/64] = 1 << ((sig - 1) % 64)
	unix.PthreadSigmask(unix.SIG_UNBLOCK, &set, nil)
	unix.Tgkill(os.Getpid(), unix.Gettid(), sig)
	if sig == unix.SIGABRT {
		os.Exit(134) // not reached: the default action ends the process
	}
}
