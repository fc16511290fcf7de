package file_test

import (
	"errors"

	"minivmm/block"
)

// "image-test" is a format for the lock tests: it passes its bytes
// through but needs of its file what QEMU's formats need (qcow2's rule,
// block.DefaultChildPerm), so that a file node under it locks as under a
// qcow2 node, without a qcow2 image.
func init() {
	block.Register(&block.Driver{Name: "image-test", Format: true, Open: func(o *block.OpenContext) (block.Image, error) {
		return &passImage{file: o.Child("file")}, nil
	}})
}

type passImage struct{ file *block.Node }

func (p *passImage) ReadAt(b []byte, off int64) (int, error)  { return p.file.ReadAt(b, off) }
func (p *passImage) WriteAt(b []byte, off int64) (int, error) { return p.file.WriteAt(b, off) }
func (p *passImage) Flush() error                             { return p.file.Flush() }
func (p *passImage) Length() (int64, error)                   { return p.file.Length(), nil }
func (p *passImage) Close() error                             { return nil }

func (p *passImage) PrepareReopen(r *block.ReopenRequest) (block.Pending, error) {
	if r.Children["file"] != p.file {
		return nil, errors.New("Cannot change the option 'file'")
	}
	return nothing{}, nil
}

type nothing struct{}

func (nothing) Commit() {}
func (nothing) Abort()  {}

// asImage puts a lone file node's options under an image-test node: the
// generic options (node-name, read-only, force-share...) go to the format
// node, which the file child inherits; the file driver's stay with it.
func asImage(o block.Options) block.Options {
	if o["driver"] != "file" {
		return o
	}
	outer, inner := block.Options{"driver": "image-test"}, block.Options{"driver": "file"}
	for k, v := range o {
		switch k {
		case "driver":
		case "filename", "locking", "aio", "aio-max-batch", "drop-cache":
			inner[k] = v
		default:
			outer[k] = v
		}
	}
	outer["file"] = inner
	return outer
}
