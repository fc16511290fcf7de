package block

import "strings"

// Dirname is QEMU's bdrv_dirname: the directory a relative name found in
// n's image (a backing file name) is relative to, with its trailing
// slash. It is that of the node at the bottom of n's primary children (a
// format's "file", a filter's filtered child: blkdebug's "image"), so a
// node whose own filename is a json: description still has one; ok is
// false where that node's filename is a json: description too (a quorum
// of files in different directories has none).
func Dirname(n *Node) (dir string, ok bool) {
	n.g.mu.Lock()
	defer n.g.mu.Unlock()
	return dirnameLocked(n)
}

// ChildDirname is Dirname of the node's child in role, for a driver's
// Open (which runs with the graph locked).
func (o *OpenContext) ChildDirname(role string) (dir string, ok bool) {
	c := o.children[role]
	if c == nil {
		return "", false
	}
	return dirnameLocked(c)
}

// dirnameLocked is Dirname with the graph's lock held.
func dirnameLocked(n *Node) (string, bool) {
	for depth := 0; depth < maxGraphDepth; depth++ {
		c := n.children["file"]
		if c == nil && n.drv.Name == "blkdebug" {
			c = n.children["image"]
		}
		if c == nil {
			break
		}
		n = c
	}
	name := n.Filename()
	if strings.HasPrefix(name, "json:") {
		return "", false
	}
	return name[:strings.LastIndexByte(name, '/')+1], true
}
