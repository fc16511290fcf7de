// Package nullco is the "null-co" protocol driver: a disk of a given size
// that stores nothing, for measuring the block layer's own cost.
package nullco

import (
	"errors"
	"time"

	"minivmm/block"
)

func init() {
	block.Register(&block.Driver{
		Name:    "null-co",
		Options: map[string]block.OptType{"size": block.OptSize, "read-zeroes": block.OptBool, "latency-ns": block.OptInt},
		Open:    open,
	})
}

type image struct {
	size       int64
	readZeroes bool
	latency    time.Duration // latency-ns: each request takes this long
}

func open(o *block.OpenContext) (block.Image, error) {
	size, err := o.Options.Size("size", 1<<30)
	if err != nil {
		return nil, err
	}
	readZeroes, err := o.Options.Bool("read-zeroes", false)
	if err != nil {
		return nil, err
	}
	latency, err := o.Options.Int("latency-ns", 0)
	if err != nil {
		return nil, err
	}
	if latency < 0 {
		return nil, errors.New("latency-ns is invalid")
	}
	return &image{size: size, readZeroes: readZeroes, latency: time.Duration(latency)}, nil
}

// ReadAt leaves p as it is unless read-zeroes is on, as QEMU's null-co
// does: the point is to cost nothing.
func (n *image) ReadAt(p []byte, off int64) (int, error) {
	n.wait()
	if n.readZeroes {
		clear(p)
	}
	return len(p), nil
}

// wait is the request's latency (QEMU's null-co sleeps it, too).
func (n *image) wait() {
	if n.latency > 0 {
		time.Sleep(n.latency)
	}
}

func (n *image) WriteAt(p []byte, off int64) (int, error)   { n.wait(); return len(p), nil }
func (n *image) WriteZeroes(off, l int64, unmap bool) error { n.wait(); return nil }
func (n *image) Flush() error                               { n.wait(); return nil }
func (n *image) Length() (int64, error)                     { return n.size, nil }
func (n *image) Close() error                               { return nil }

func (n *image) BlockStatus(off, l int64) (block.Status, int64, error) {
	return block.Status{Data: !n.readZeroes, Zero: n.readZeroes, Allocated: true, Offset: -1}, l, nil
}

func (n *image) Filename() string { return "null-co://" }

func (n *image) ActualSize() (int64, error) { return 0, nil }
