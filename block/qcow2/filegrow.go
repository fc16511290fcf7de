package qcow2

// Growing the file ahead of allocations, in steps, and cutting the
// unused tail of the last step again.

// fileGrowStep is how far the file grows at a time: the block layer
// refuses writes past a node's end, so allocations beyond it need a
// truncate first, and one per allocated cluster cost a syscall and the
// file node's exclusive lock on every first write. The unused tail is
// cut again by trimFile.
const fileGrowStep = 1 << 20

// ensureFile grows the file to at least size bytes.
func (img *image) ensureFile(size int64) error {
	have := img.file.Length()
	if have >= size {
		return nil
	}
	if !img.grown {
		img.grown, img.lenBeforeGrowth = true, have
	}
	step := max(img.clusterSize, fileGrowStep)
	return img.file.Truncate((size + step - 1) / step * step)
}

// trimFile cuts the file after the last allocated cluster, but never
// below its length before this image grew it: only the growth steps'
// unused tail goes (clusters past rc.end have no refcount and nothing
// points to them, so a crash before this merely leaves a sparse tail).
func (img *image) trimFile() error {
	if !img.grown {
		return nil
	}
	end := max(img.lenBeforeGrowth, img.rc.end*img.clusterSize)
	if img.file.Length() <= end {
		return nil
	}
	return img.file.Truncate(end)
}
