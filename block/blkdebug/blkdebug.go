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
	child       *block.Node
	maxTransfer int64
	// Zero writes as QEMU's block layer hands them to blkdebug:
	// zeroAlign (the larger of opt-write-zero and the request
	// alignment; 0 without opt-write-zero) and maxZero (max-write-zero).
	zeroAlign, maxZero int64

	mu     sync.Mutex
	state  int64
	rules  map[string][]*rule // by event, in the order given
	active []*rule            // inject-error rules the last event armed

	breaks    []breakpoint
	suspended []*suspendedReq
	notify    func(msg string)
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
	img := &image{child: o.Child("image"), state: 1, rules: map[string][]*rule{}}
	for _, s := range sections {
		r, err := newRule(s)
		if err != nil {
			return nil, err
		}
		img.rules[r.event] = append(img.rules[r.event], r)
	}
	if err := img.limits(o.Options, o.Direct); err != nil {
		return nil, err
	}
	// Rules on "none" are armed from the start, as QEMU's are.
	img.Event("none")
	return img, nil
}

// limits checks the request limits as QEMU's blkdebug_open does, against
// the larger of align and the file's own alignment (1, or 512 with
// O_DIRECT). max-transfer splits requests, opt-write-zero and
// max-write-zero cut zero writes (WriteZeroes); the others are checked
// and otherwise have no effect here.
func (img *image) limits(o block.Options, direct bool) error {
	const intMax = 1<<31 - 1
	get := func(k string) int64 { v, _ := o.Size(k, 0); return v }
	align := get("align")
	if align != 0 && (align >= intMax || align&(align-1) != 0) {
		return fmt.Errorf("Cannot meet constraints with align %d", align)
	}
	unit := max(align, 1)
	if direct {
		unit = max(unit, 512)
	}
	optWZ, optDiscard := get("opt-write-zero"), get("opt-discard")
	for _, c := range []struct {
		key  string
		unit int64
	}{{"max-transfer", unit}, {"opt-write-zero", unit}, {"max-write-zero", max(optWZ, unit)}, {"opt-discard", unit}, {"max-discard", max(optDiscard, unit)}} {
		if v := get(c.key); v != 0 && (v >= intMax || v%c.unit != 0) {
			return fmt.Errorf("Cannot meet constraints with %s %d", c.key, v)
		}
	}
	img.maxTransfer = get("max-transfer")
	if optWZ != 0 {
		img.zeroAlign, img.maxZero = max(optWZ, unit), get("max-write-zero")
	}
	return nil
}

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
// request fails it; a once rule goes away then.
func (img *image) check(off, n int64, t ioType) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	for i, r := range img.active {
		if r.ioMask&(1<<uint(t)) == 0 || r.offset != -1 && !(n > 0 && r.offset >= off && r.offset < off+n) {
			continue
		}
		if r.errno == 0 {
			return nil
		}
		if r.once {
			img.active = slices.Delete(img.active, i, i+1)
			img.rules[r.event] = slices.DeleteFunc(img.rules[r.event], func(x *rule) bool { return x == r })
		}
		return r.errno
	}
	return nil
}

func (img *image) ReadAt(p []byte, off int64) (int, error) {
	if err := img.check(off, int64(len(p)), ioRead); err != nil {
		return 0, err
	}
	return img.split(p, off, img.child.ReadAt)
}

func (img *image) WriteAt(p []byte, off int64) (int, error) {
	if err := img.check(off, int64(len(p)), ioWrite); err != nil {
		return 0, err
	}
	return img.split(p, off, img.child.WriteAt)
}

// split passes a request to the child in max-transfer pieces.
func (img *image) split(p []byte, off int64, f func([]byte, int64) (int, error)) (int, error) {
	if img.maxTransfer == 0 || int64(len(p)) <= img.maxTransfer {
		return f(p, off)
	}
	done := 0
	for done < len(p) {
		end := min(len(p), done+int(img.maxTransfer))
		n, err := f(p[done:end], off+int64(done))
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func (img *image) Flush() error {
	if err := img.check(0, 0, ioFlush); err != nil {
		return err
	}
	return img.child.Flush()
}

func (img *image) WriteZeroes(off, n int64, unmap bool) error {
	if err := img.check(off, n, ioWriteZeroes); err != nil {
		return err
	}
	if img.zeroAlign == 0 {
		return img.child.WriteZeroes(off, n, unmap)
	}
	// With opt-write-zero, QEMU's block layer cuts a zero write at its
	// alignment (bdrv_co_do_pwrite_zeroes: a head up to the first
	// boundary, at most max-transfer; the body in max-write-zero pieces;
	// the tail), and blkdebug refuses pieces smaller than the alignment,
	// so that the layer writes them as zeroed data: what tests of that
	// fallback (iotests 177, 204) see in the image.
	align := img.zeroAlign
	maxZero := int64(1<<31 - 1)
	if img.maxZero != 0 {
		maxZero = img.maxZero
	}
	maxZero = max(maxZero-maxZero%align, align)
	maxXfer := int64(1<<31 - 1)
	if img.maxTransfer != 0 {
		maxXfer = img.maxTransfer
	}
	head, tail := off%align, (off+n)%align
	for n > 0 {
		k := n
		if head != 0 {
			k = min(n, maxXfer, align-head)
			head = (head + k) % align
		} else if tail != 0 && k > align {
			k -= tail
		}
		k = min(k, maxZero)
		var err error
		if k < align {
			_, err = img.split(make([]byte, k), off, img.child.WriteAt)
		} else {
			err = img.child.WriteZeroes(off, k, unmap)
		}
		if err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

func (img *image) Discard(off, n int64) error {
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
