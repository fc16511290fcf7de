package qcow2

// The fast path: writes into clusters the image already owns, under the
// shared side of the write lock.

// inPlaceSpan is one cluster's part of an in-place write.
type inPlaceSpan struct {
	host int64
	p    []byte
}

// writeInPlace is the fast path: a write all of whose clusters the image
// already owns (normal, COPIED) changes no metadata, so it needs only the
// shared side of wmu, and such writes run side by side. Every cluster is
// checked before anything is written; if one does not qualify (or the
// image is not ready for writes yet), nothing is written and done is
// false: the exclusive path then does it all and reports any error.
func (img *image) writeInPlace(p []byte, off int64) (done bool, err error) {
	img.wmu.RLock()
	defer img.wmu.RUnlock()
	x := img.freshIndex()
	if img.corrupted || !img.writable || img.rc == nil || x == nil {
		return false, nil
	}
	cs := img.clusterSize
	var buf [2]inPlaceSpan // a 4 KiB request spans at most two clusters
	spans := buf[:0]
	for q, o := p, off; len(q) > 0; {
		c, in := o>>img.clusterBits, o&(cs-1)
		n := min(int64(len(q)), cs-in)
		_, e, bm, _, err := img.writeEntry(c)
		host := int64(e & offsetMask)
		if err != nil || e&flagCopied == 0 || e&(flagCompressed|flagZero) != 0 || !img.mapsHost(e) ||
			e&l2StdReserved != 0 || host&(cs-1) != 0 || img.checkDataHost(extData, host, c*cs) != nil ||
			!img.external() && img.overlapIn(x, host+in, n, 0) != "" {
			return false, nil
		}
		// With subclusters, the metadata stays unchanged only if every
		// subcluster written is already allocated.
		if m := img.scMask(in, in+n); img.extL2 && bm&m != m {
			return false, nil
		}
		if host+in+n > img.data.Length() { // the file must grow first: exclusive
			return false, nil
		}
		spans = append(spans, inPlaceSpan{host + in, q[:n]})
		q, o = q[n:], o+n
	}
	for _, s := range spans {
		img.file.Event("write_aio")
		if _, err := img.data.WriteAt(s.p, s.host); err != nil {
			return true, err
		}
	}
	return true, nil
}
