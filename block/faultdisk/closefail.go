package faultdisk

import "minivmm/block"

// CloseFailing returns a format driver named name that passes every
// request to its "file" child and fails its Close with err: the shape of
// a format whose write-back at close fails (qcow2's lazy refcounts on a
// disk gone bad), for tests of who hears of it. Install it in one graph
// with [block.Graph.AddDriver].
func CloseFailing(name string, err error) *block.Driver {
	return &block.Driver{
		Name: name, Format: true,
		Open: func(o *block.OpenContext) (block.Image, error) {
			return &closeFailing{file: o.Child("file"), err: err}, nil
		},
	}
}

type closeFailing struct {
	file *block.Node
	err  error
}

func (f *closeFailing) ReadAt(p []byte, off int64) (int, error)  { return f.file.ReadAt(p, off) }
func (f *closeFailing) WriteAt(p []byte, off int64) (int, error) { return f.file.WriteAt(p, off) }
func (f *closeFailing) Flush() error                             { return f.file.Flush() }
func (f *closeFailing) Length() (int64, error)                   { return f.file.Length(), nil }
func (f *closeFailing) Close() error                             { return f.err }
