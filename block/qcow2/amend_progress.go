package qcow2

// qemuRefcountWalks is the progress QEMU's qcow2_change_refcount_order
// reports, as (done, total) pairs: it walks the old refcount table once
// per round of allocations (each new refblock and the new table taken
// from the first free clusters, which may need yet another round), then
// once more to write the new blocks; every walk reports each old table
// index and its end. minivmm writes the new structures in one pass, but
// `amend -p` prints QEMU's steps, which scripts compare: this replays
// QEMU's allocations on the refcounts (counts, by cluster) to count its
// walks. cs is the cluster size, oldEntries the old table's entries.
func qemuRefcountWalks(counts []uint64, cs, oldEntries int64, oldOrder, newOrder uint32) [][2]int64 {
	counts = append([]uint64(nil), counts...)
	oldPer := cs * 8 >> oldOrder
	newPer := cs * 8 >> newOrder
	covered := oldEntries * oldPer
	free := int64(0) // QEMU's free_cluster_index
	get := func(k int64) uint64 {
		if k < int64(len(counts)) {
			return counts[k]
		}
		return 0
	}
	set := func(k int64, v uint64) {
		for int64(len(counts)) <= k {
			counts = append(counts, 0)
		}
		counts[k] = v
	}
	alloc := func(n int64) int64 {
		for {
			start := free
			ok := true
			for i := int64(0); i < n; i++ {
				if get(start+i) != 0 {
					free = start + i + 1
					ok = false
					break
				}
			}
			if ok {
				for i := int64(0); i < n; i++ {
					set(start+i, 1)
				}
				free = start + n
				return start
			}
		}
	}
	var steps [][2]int64
	report := func(walk, total int64) {
		for ri := int64(0); ri < oldEntries; ri++ {
			steps = append(steps, [2]int64{walk*oldEntries + ri, total * oldEntries})
		}
		steps = append(steps, [2]int64{(walk + 1) * oldEntries, total * oldEntries})
	}
	table := map[int64]bool{} // new refblocks allocated, by index
	tableSize := int64(0)
	tableOff, tableClusters := int64(-1), int64(0)
	walk := int64(0)
	for {
		report(walk, max(walk+2, 3))
		walk++
		allocated := false
		for nbi := int64(0); nbi*newPer < min(covered, int64(len(counts))); nbi++ {
			empty := true
			for k := nbi * newPer; k < (nbi+1)*newPer && k < covered; k++ {
				if get(k) != 0 {
					empty = false
					break
				}
			}
			if empty {
				continue
			}
			if nbi >= tableSize {
				per := cs / 8
				tableSize = (nbi + 1 + per - 1) / per * per
			}
			if !table[nbi] {
				alloc(1)
				table[nbi] = true
				allocated = true
			}
		}
		if !allocated {
			break
		}
		if tableOff >= 0 {
			for k := tableOff; k < tableOff+tableClusters; k++ {
				set(k, 0)
			}
			free = min(free, tableOff)
		}
		tableClusters = (tableSize*8 + cs - 1) / cs
		tableOff = alloc(tableClusters)
	}
	report(walk, walk+1)
	return steps
}
