package monitor

import (
	"path"
	"strings"

	"minivmm/block"
)

// What query-named-block-nodes and query-block show of a node's backing
// chain, as QEMU 7.2's bdrv_block_device_info: the backing file its
// header names (and that name made absolute against the node's own
// filename, as QEMU does even for /dev/fdset/N), and, unless the query is
// flat, the backing image's own info nested in it, backing_file_depth
// counting the levels.

func init() {
	tImageInfo.members = append(tImageInfo.members,
		opt("backing-filename", tStr), opt("full-backing-filename", tStr), opt("backing-image", tImageInfo))
}

// imageInfo is the ImageInfo of n, with its backing chain unless flat;
// depth is how many levels it nested. For query-block (blk) the chain
// skips the filter nodes a job made without a name, which the user does
// not know of, as QEMU's bdrv_block_device_info does.
func imageInfo(n *block.Node, flat, blk bool) (image Obj, depth int) {
	info := n.Info()
	image = Obj{{"virtual-size", info.Length}, {"filename", info.Filename}, {"format", info.Driver}}
	if info.ActualSize >= 0 {
		image = append(image, Member{"actual-size", info.ActualSize})
	}
	if info.DirtyFlag != nil {
		image = append(image, Member{"dirty-flag", *info.DirtyFlag})
	}
	if name := n.BackingName(); name != "" {
		image = append(image, Member{"backing-filename", name})
		dir := info.Filename
		if f := n.Child("file"); f != nil && strings.HasPrefix(dir, "json:") {
			dir = f.Filename() // QEMU's bdrv_dirname asks the protocol node
		}
		if full, ok := fullBackingName(dir, name); ok {
			image = append(image, Member{"full-backing-filename", full})
		}
	}
	b := n.Child("backing")
	if b == nil && n.IsFilter() {
		b = n.Child("file") // the filtered child, as QEMU's bdrv_filter_or_cow_child
	}
	if b != nil && !flat {
		if blk {
			b = skipImplicitFilters(b)
		}
		sub, d := imageInfo(b, false, blk)
		image = append(image, Member{"backing-image", sub})
		depth = d + 1
	}
	return image, depth
}

// fullBackingName is QEMU's bdrv_get_full_backing_filename: a relative
// name is taken relative to the overlay's directory; a json: overlay
// gives none.
func fullBackingName(overlay, name string) (string, bool) {
	switch {
	case strings.HasPrefix(name, "/") || strings.Contains(name, ":"):
		return name, true
	case strings.HasPrefix(overlay, "json:"):
		return "", false
	}
	return path.Join(path.Dir(overlay), name), true
}

// skipImplicitFilters is QEMU's bdrv_skip_implicit_filters: below the
// filter nodes a job made without a name (#blockNNN), down to the first
// node the user knows.
func skipImplicitFilters(n *block.Node) *block.Node {
	for n != nil && n.IsFilter() && strings.HasPrefix(n.Name(), "#") {
		c := n.Child("backing")
		if c == nil {
			c = n.Child("file")
		}
		n = c
	}
	return n
}
