package block

import (
	"fmt"
	"strings"
)

// Dirnamer is a driver that knows the directory relative names under
// its node are relative to (QEMU's bdrv_dirname callback), or that
// there is none: quorum's children may lie in several.
type Dirnamer interface {
	Dirname() (string, error)
}

// Dirname is the directory a relative backing file name of this node's
// image is found in, with a trailing slash ("" for the current one), as
// QEMU's bdrv_dirname finds it: the driver's own answer, else its
// primary child's ("file", a filter's "image"), else the directory of
// the node's filename, where a filename describes it.
func (n *Node) Dirname() (string, error) {
	n.mu.RLock()
	d, ok := n.img.(Dirnamer)
	c := n.primaryChild()
	n.mu.RUnlock()
	if ok {
		return d.Dirname()
	}
	if c != nil {
		return c.Dirname()
	}
	if fn := n.Filename(); fn != "" && !strings.HasPrefix(fn, "json:") {
		return fn[:strings.LastIndexByte(fn, '/')+1], nil
	}
	return "", fmt.Errorf("Cannot generate a base directory for %s nodes", n.drv.Name)
}

// ChildDirname is Dirname of the node's child in role, for a driver's
// Open: a relative backing name in a json: image is found beside the file
// below it (QEMU's bdrv_get_full_backing_filename).
func (o *OpenContext) ChildDirname(role string) (dir string, ok bool) {
	c := o.children[role]
	if c == nil {
		return "", false
	}
	dir, err := c.Dirname()
	return dir, err == nil
}
