package block

// SkipFilters is the first node at or below n that is no filter driver's
// (QEMU's bdrv_skip_filters): qemu-img's block status (map, compare,
// measure) looks through filters such as blkdebug to the image below.
func (n *Node) SkipFilters() *Node {
	for n != nil && n.drv != nil && n.drv.Filtered != "" {
		c := n.Child(n.drv.Filtered)
		if c == nil {
			break
		}
		n = c
	}
	return n
}
