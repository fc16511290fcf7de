package monitor

import (
	"errors"
	"fmt"
)

// xBlockdevChange is QEMU's x-blockdev-change: "node" adds a node as a
// new child of "parent" (a quorum), "child" removes the child of that
// name; one of them, not both.
func xBlockdevChange(c *call, args Args) (any, error) {
	parent, _ := args.Str("parent")
	child, hasChild := args.Str("child")
	node, hasNode := args.Str("node")
	if _, ok := c.mon.srv.graph.Node(parent); !ok {
		return nil, fmt.Errorf("Cannot find device='%s' nor node-name='%s'", parent, parent)
	}
	switch {
	case hasChild && hasNode:
		return nil, errors.New("The parameters child and node are in conflict")
	case hasChild:
		return nil, c.mon.srv.graph.RemoveChild(parent, child)
	case hasNode:
		return nil, c.mon.srv.graph.AddChild(parent, node)
	}
	return nil, errors.New("Either child or node must be specified")
}
