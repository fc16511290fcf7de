// Package blkdebug is QEMU's fault injection filter: a node over its
// "image" child that fails requests with an errno once a format above it
// has reached a named event (block.EventSink), with rules from a config
// file or from inject-error/set-state options.
package blkdebug

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/qemuopen"
)

func init() {
	block.Register(&block.Driver{
		Name: "blkdebug",
		Options: map[string]block.OptType{
			"image": block.OptChild, "config": block.OptString,
			"inject-error": block.OptObject, "set-state": block.OptObject,
			"align": block.OptSize, "max-transfer": block.OptSize,
			"opt-write-zero": block.OptSize, "max-write-zero": block.OptSize,
			"opt-discard": block.OptSize, "max-discard": block.OptSize,
		},
		Required: []string{"image"},
		Filtered: "image",
		Open:     open,
	})
}

type image struct {
	child *block.Node
	// The limits the node declares (QEMU's blkdebug_refresh_limits): 0
	// leaves the generic layer's default.
	align, maxTransfer, optWriteZero, maxWriteZero, optDiscard, maxDiscard int64

	mu     sync.Mutex
	state  int64
	rules  map[string][]*rule // by event, in the order given
	active []*rule            // inject-error rules the last event armed

	breaks    []breakpoint
	suspended []*suspendedReq
	notify    func(msg string)

	exact exactName // filename.go
}

func open(o *block.OpenContext) (block.Image, error) {
	var sections []section
	if path, _ := o.Options.String("config", ""); path != "" {
		data, err := readConfig(o.Files, path)
		if err != nil {
			return nil, err
		}
		if sections, err = parseConfig(bytes.NewReader(data)); err != nil {
			return nil, err
		}
	}
	for _, group := range []string{"inject-error", "set-state"} {
		s, err := optionSections(group, o.Options[group])
		if err != nil {
			return nil, err
		}
		sections = append(sections, s...)
	}
	img := &image{child: o.Child("image"), state: 1, rules: map[string][]*rule{}, exact: newExactName(o.Options)}
	for _, s := range sections {
		r, err := newRule(s)
		if err != nil {
			return nil, err
		}
		img.rules[r.event] = append(img.rules[r.event], r)
	}
	if err := img.limits(o.Options); err != nil {
		return nil, err
	}
	// Rules on "none" are armed from the start, as QEMU's are.
	img.Event("none")
	return img, nil
}

// limits checks the request limits as QEMU's blkdebug_open does, against
// the larger of align and the file's own alignment.
func (img *image) limits(o block.Options) error {
	const intMax = 1<<31 - 1
	get := func(k string) int64 { v, _ := o.Size(k, 0); return v }
	align := get("align")
	if align != 0 && (align >= intMax || align&(align-1) != 0) {
		return fmt.Errorf("Cannot meet constraints with align %d", align)
	}
	unit := max(align, img.child.Limits().RequestAlignment)
	optWZ, optDiscard := get("opt-write-zero"), get("opt-discard")
	for _, c := range []struct {
		key  string
		unit int64
	}{{"max-transfer", unit}, {"opt-write-zero", unit}, {"max-write-zero", max(optWZ, unit)}, {"opt-discard", unit}, {"max-discard", max(optDiscard, unit)}} {
		if v := get(c.key); v != 0 && (v >= intMax || v%c.unit != 0) {
			return fmt.Errorf("Cannot meet constraints with %s %d", c.key, v)
		}
	}
	img.align, img.maxTransfer = align, get("max-transfer")
	img.optWriteZero, img.maxWriteZero = optWZ, get("max-write-zero")
	img.optDiscard, img.maxDiscard = optDiscard, get("max-discard")
	return nil
}

// RefreshLimits declares the limits given: the generic layer then pads,
// splits and aligns requests to them before they reach this driver.
func (img *image) RefreshLimits(l *block.Limits) {
	for _, f := range []struct{ v, dst *int64 }{
		{&img.align, &l.RequestAlignment}, {&img.maxTransfer, &l.MaxTransfer},
		{&img.optWriteZero, &l.PwriteZeroesAlignment}, {&img.maxWriteZero, &l.MaxPwriteZeroes},
		{&img.optDiscard, &l.PdiscardAlignment}, {&img.maxDiscard, &l.MaxPdiscard},
	} {
		if *f.v != 0 {
			*f.dst = *f.v
		}
	}
}

// requestAlignment is the node's: align, else the default 1 (QEMU does
// not inherit a child's request alignment).
func (img *image) requestAlignment() int64 { return max(img.align, 1) }

// readConfig reads the config file through the registry (fdsets too).
func readConfig(files *qemuopen.Registry, path string) ([]byte, error) {
	fail := func(err error) error {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			return fmt.Errorf("Could not read blkdebug config file: %s", qemuopen.Strerror(errno))
		}
		return fmt.Errorf("Could not read blkdebug config file: %w", err)
	}
	fd, err := files.Open(path, unix.O_RDONLY)
	if err != nil {
		return nil, fail(err)
	}
	defer files.Close(fd)
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fail(err)
		}
		if n == 0 {
			return out, nil
		}
		if out = append(out, buf[:n]...); len(out) > 16<<20 {
			return nil, fail(unix.EFBIG)
		}
	}
}

// optionSections turns the inject-error/set-state option (a JSON list, or
// keyval's inject-error.0.event=... as a map by index) into sections.
func optionSections(group string, v any) ([]section, error) {
	var elems []any
	switch v := v.(type) {
	case nil:
		return nil, nil
	case []any:
		elems = v
	case map[string]any:
		elems = indexed(v)
	case block.Options:
		elems = indexed(v)
	default:
		return nil, fmt.Errorf("Invalid parameter type for '%s', expected: array", group)
	}
	var out []section
	for i, e := range elems {
		m, ok := e.(map[string]any)
		if o, isOpts := e.(block.Options); isOpts {
			m, ok = o, true
		}
		if !ok {
			return nil, fmt.Errorf("Invalid parameter type for '%s.%d', expected: object", group, i)
		}
		s := section{group: group, opts: map[string]string{}}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if !validKey(group, k) {
				return nil, fmt.Errorf("Parameter '%s.%d.%s' is unexpected", group, i, k)
			}
			s.opts[k] = fmt.Sprint(m[k])
		}
		out = append(out, s)
	}
	return out, nil
}

// indexed orders keyval's {"0": ..., "1": ...} by index.
func indexed(m map[string]any) []any {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return x - y
	})
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// Event arms the event's inject-error rules in place of those armed
// before, and moves to a set-state rule's new state (QEMU's
// blkdebug_debug_event). Rules on another state than the current one
// are skipped.
func (img *image) Event(name string) {
	img.mu.Lock()
	hit := img.takeBreaks(name)
	img.event(name)
	img.mu.Unlock()
	img.suspend(hit)
}

func (img *image) event(name string) {
	newState, armed := img.state, false
	for _, r := range img.rules[name] {
		if r.state != 0 && r.state != img.state {
			continue
		}
		if !r.inject {
			newState = r.newState
			continue
		}
		if !armed {
			img.active, armed = nil, true
		}
		img.active = append(img.active, r)
	}
	img.state = newState
}

// check is QEMU's rule_check: the first armed rule that covers the
// request fails it; a once rule goes away then. An error that is not
// immediate completes after a yield, as QEMU's coroutine reschedules
// itself before returning it: the request stays pending a moment, so
// requests issued after it that complete at once complete first.
func (img *image) check(off, n int64, t ioType) error {
	img.mu.Lock()
	var hit *rule
	for i, r := range img.active {
		if r.ioMask&(1<<uint(t)) == 0 || r.offset != -1 && !(n > 0 && r.offset >= off && r.offset < off+n) {
			continue
		}
		if r.errno == 0 {
			break
		}
		if r.once {
			img.active = slices.Delete(img.active, i, i+1)
			img.rules[r.event] = slices.DeleteFunc(img.rules[r.event], func(x *rule) bool { return x == r })
		}
		hit = r
		break
	}
	img.mu.Unlock()
	if hit == nil {
		return nil
	}
	if !hit.immediately {
		time.Sleep(yieldDelay)
	}
	return hit.errno
}

// yieldDelay stands for QEMU's yield to its main loop, where the commands
// that follow run before the failed request completes.
const yieldDelay = 20 * time.Millisecond

// fits is QEMU's blkdebug sanity check of the block layer's guarantees
// (an assertion there): a read or write is aligned, but for a read that
// ends at the end of the image, and no longer than max-transfer.
func (img *image) fits(off, n int64) error {
	a := img.requestAlignment()
	if off%a != 0 || n%a != 0 && off+n != img.child.Length() || img.maxTransfer != 0 && n > img.maxTransfer {
		return fmt.Errorf("blkdebug: the block layer passed a request of %d bytes at %d, outside align %d, max-transfer %d: %w",
			n, off, a, img.maxTransfer, unix.EINVAL)
	}
	return nil
}

func (img *image) ReadAt(p []byte, off int64) (int, error) {
	if err := img.fits(off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := img.check(off, int64(len(p)), ioRead); err != nil {
		return 0, err
	}
	return img.child.ReadAt(p, off)
}

func (img *image) WriteAt(p []byte, off int64) (int, error) {
	if err := img.fits(off, int64(len(p))); err != nil {
		return 0, err
	}
	if err := img.check(off, int64(len(p)), ioWrite); err != nil {
		return 0, err
	}
	return img.child.WriteAt(p, off)
}

func (img *image) Flush() error {
	if err := img.check(0, 0, ioFlush); err != nil {
		return err
	}
	return img.child.Flush()
}

// WriteZeroes passes on only requests of at least the zero alignment,
// as QEMU's blkdebug does, so that the generic layer's fallback to
// writing the unaligned parts is what a test exercises.
func (img *image) WriteZeroes(off, n int64, unmap bool) error {
	if n < max(img.requestAlignment(), img.optWriteZero) {
		return block.ErrNotSupported
	}
	if err := img.check(off, n, ioWriteZeroes); err != nil {
		return err
	}
	return img.child.WriteZeroes(off, n, unmap)
}

// Discard drops requests shorter than the request alignment (the
// unaligned head and tail the generic layer splits off), as QEMU's.
func (img *image) Discard(off, n int64) error {
	if n < img.requestAlignment() {
		return block.ErrNotSupported
	}
	if err := img.check(off, n, ioDiscard); err != nil {
		return err
	}
	return img.child.Discard(off, n)
}

func (img *image) BlockStatus(off, n int64) (block.Status, int64, error) {
	if err := img.check(off, n, ioBlockStatus); err != nil {
		return block.Status{}, 0, err
	}
	return img.child.BlockStatus(off, n)
}

func (img *image) Truncate(size int64) error { return img.child.Truncate(size) }
func (img *image) Length() (int64, error)    { return img.child.Length(), nil }
func (img *image) Close() error              { return nil }
