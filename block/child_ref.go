package block

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// AttachChild makes ref the node's child in role, for a driver whose
// children are listed in an option of its own (quorum's "children"): a
// node-name refers to a node that exists, as a child reference does in
// any node's options; Options open a new inline node (OpenChild). The
// child is the node's from then on, and an inline one is closed with it.
func (o *OpenContext) AttachChild(role string, ref any) (*Node, error) {
	switch ref := ref.(type) {
	case Options:
		return o.OpenChild(role, ref)
	case map[string]any:
		return o.OpenChild(role, Options(ref))
	case string:
		if o.children[role] != nil {
			return nil, fmt.Errorf("node '%s' already has a '%s' child", o.NodeName, role)
		}
		child := o.g.nodes[ref]
		if child == nil {
			return nil, fmt.Errorf("Cannot find device='%s' nor node-name='%s'", ref, ref)
		}
		if child.held {
			return nil, errHeld(ref)
		}
		o.children[role] = child
		return child, nil
	}
	return nil, fmt.Errorf("Invalid parameter type for '%s', expected: BlockdevRef", role)
}

// LookupNode is the graph's node named name (nil: none), for a driver
// whose options name a node that is not its child (copy-on-read's
// "bottom").
func (o *OpenContext) LookupNode(name string) *Node { return o.g.nodes[name] }

// writtenChildren are the children a node's writes reach, which its
// writers write through (addWriter): its "file" (or a filter's "image"),
// a qcow2 data file (the guest data), and every child of a list of
// children (quorum's "children.N", in order).
func (n *Node) writtenChildren() []*Node {
	var out []*Node
	if f := n.primaryChild(); f != nil {
		out = append(out, f)
	}
	if d := n.children["data-file"]; d != nil {
		out = append(out, d)
	}
	var listed []int
	for role := range n.children {
		if idx, ok := strings.CutPrefix(role, "children."); ok {
			if k, err := strconv.Atoi(idx); err == nil {
				listed = append(listed, k)
			}
		}
	}
	slices.Sort(listed)
	for _, k := range listed {
		out = append(out, n.children["children."+strconv.Itoa(k)])
	}
	return out
}

// listChildren puts the children of a list of children (quorum's
// "children.0", "children.1", ...) of a node's description back into
// one list, gap-less, in their order, as QEMU's
// quorum_gather_child_options describes them.
func listChildren(d map[string]any) {
	var idx []int
	for key := range d {
		if s, ok := strings.CutPrefix(key, "children."); ok {
			if k, err := strconv.Atoi(s); err == nil {
				idx = append(idx, k)
			}
		}
	}
	if len(idx) == 0 {
		return
	}
	slices.Sort(idx)
	list := make([]any, len(idx))
	for i, k := range idx {
		key := "children." + strconv.Itoa(k)
		list[i] = d[key]
		delete(d, key)
	}
	d["children"] = list
}
