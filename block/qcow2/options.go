package qcow2

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"minivmm/block"
)

// options is the driver's schema: QEMU's qcow2 runtime options, checked
// as QEMU checks them, each honoured (overlap-check: see checkOverlap).
var options = map[string]block.OptType{
	"backing":               block.OptChild,
	"data-file":             block.OptChild,
	"l2-cache-size":         block.OptSize,
	"l2-cache-entry-size":   block.OptSize,
	"refcount-cache-size":   block.OptSize,
	"cache-size":            block.OptSize,
	"cache-clean-interval":  block.OptInt,
	"lazy-refcounts":        block.OptBool,
	"pass-discard-request":  block.OptBool,
	"pass-discard-snapshot": block.OptBool,
	"pass-discard-other":    block.OptBool,
	"overlap-check":         block.OptOverlapChecks,
	// QEMU's flat names, which qemu-io's QemuOpts may give beside a
	// string overlap-check (where they cannot nest).
	"overlap-check.template":         block.OptString,
	"overlap-check.main-header":      block.OptBool,
	"overlap-check.active-l1":        block.OptBool,
	"overlap-check.active-l2":        block.OptBool,
	"overlap-check.refcount-table":   block.OptBool,
	"overlap-check.refcount-block":   block.OptBool,
	"overlap-check.snapshot-table":   block.OptBool,
	"overlap-check.inactive-l1":      block.OptBool,
	"overlap-check.inactive-l2":      block.OptBool,
	"overlap-check.bitmap-directory": block.OptBool,
}

// overlapKinds are overlap-check's switches, one per kind of metadata.
var overlapKinds = []string{"main-header", "active-l1", "active-l2", "refcount-table",
	"refcount-block", "snapshot-table", "inactive-l1", "inactive-l2", "bitmap-directory"}

// overlapFlatKeys are overlap-check's flat option names.
func overlapFlatKeys() []string {
	keys := []string{"overlap-check.template"}
	for _, k := range overlapKinds {
		keys = append(keys, "overlap-check."+k)
	}
	return keys
}

// Cache defaults (QEMU on Linux).
const (
	defaultL2CacheMax   = 32 << 20 // DEFAULT_L2_CACHE_MAX_SIZE
	minL2CacheSlices    = 2        // MIN_L2_CACHE_SIZE
	minRefcountClusters = 4        // MIN_REFCOUNT_CACHE_SIZE
)

// cacheConfig is what the cache options come to.
type cacheConfig struct {
	l2Slices       int // L2 cache capacity, in slices
	sliceBytes     int // l2-cache-entry-size
	refcountBlocks int // refcount cache capacity, in clusters (for a writer); 0: the default
}

// readCacheSizes applies QEMU's rules (read_cache_sizes and
// qcow2_update_options_prepare): by default the L2 cache covers the whole
// disk up to 32 MiB; cache-size is shared out between the L2 and refcount
// caches; a cache too small to cover the disk uses 4 KiB slices.
func readCacheSizes(o block.Options, h *header) (cacheConfig, error) {
	var cfg cacheConfig
	cs := h.clusterSize()
	entryBytes := int64(8)
	if h.extL2() {
		entryBytes = 16
	}
	diskSize := int64(h.Size &^ 511)
	maxL2Entries := (diskSize + cs - 1) / cs
	maxL2Cache := (maxL2Entries*entryBytes + cs - 1) &^ (cs - 1)
	minRefcount := minRefcountClusters * cs

	_, combinedSet := o["cache-size"]
	_, l2Set := o["l2-cache-size"]
	_, refcountSet := o["refcount-cache-size"]
	_, entrySet := o["l2-cache-entry-size"]
	combined, err := o.Size("cache-size", 0)
	if err != nil {
		return cfg, err
	}
	l2Max, err := o.Size("l2-cache-size", defaultL2CacheMax)
	if err != nil {
		return cfg, err
	}
	refcount, err := o.Size("refcount-cache-size", 0)
	if err != nil {
		return cfg, err
	}
	entry, err := o.Size("l2-cache-entry-size", cs)
	if err != nil {
		return cfg, err
	}
	l2 := min(maxL2Cache, l2Max)

	if combinedSet {
		switch {
		case l2Set && refcountSet:
			return cfg, errors.New("cache-size, l2-cache-size and refcount-cache-size may not be set at the same time")
		case l2Set && l2Max > combined:
			return cfg, errors.New("l2-cache-size may not exceed cache-size")
		case refcount > combined:
			return cfg, errors.New("refcount-cache-size may not exceed cache-size")
		}
		switch {
		case l2Set:
			refcount = combined - l2
		case refcountSet:
			l2 = combined - refcount
		case combined >= maxL2Cache+minRefcount:
			l2 = maxL2Cache
			refcount = combined - l2
		default:
			refcount = min(combined, minRefcount)
			l2 = combined - refcount
		}
	}
	if l2 < maxL2Cache && !entrySet {
		entry = min(cs, 4096)
	}
	if entry < 1<<minClusterBits || entry > cs || entry&(entry-1) != 0 {
		return cfg, fmt.Errorf("L2 cache entry size must be a power of two between %d and the cluster size (%d)", 1<<minClusterBits, cs)
	}
	slices := max(l2/entry, minL2CacheSlices)
	if slices > math.MaxInt32 {
		return cfg, errors.New("L2 cache size too big")
	}
	blocks := max(refcount/cs, minRefcountClusters)
	if blocks > math.MaxInt32 {
		return cfg, errors.New("Refcount cache size too big")
	}
	if !refcountSet && !combinedSet {
		blocks = 0 // minivmm's default, larger than QEMU's (refcount.go)
	}
	cfg = cacheConfig{l2Slices: int(slices), sliceBytes: int(entry), refcountBlocks: int(blocks)}
	return cfg, nil
}

// checkOtherOptions checks the options the read path does not use, with
// QEMU's messages.
func checkOtherOptions(o block.Options, h *header) error {
	interval, err := o.Int("cache-clean-interval", 600)
	if err != nil {
		return err
	}
	if interval < 0 || interval > math.MaxUint32 {
		return errors.New("Cache clean interval too big")
	}
	lazy, err := o.Bool("lazy-refcounts", h.CompatibleFeatures&compatLazyRefcounts != 0)
	if err != nil {
		return err
	}
	if lazy && h.Version < 3 {
		return errors.New("Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level")
	}
	for _, k := range []string{"pass-discard-request", "pass-discard-snapshot", "pass-discard-other"} {
		if _, err := o.Bool(k, false); err != nil {
			return err
		}
	}
	return checkOverlap(o)
}

// checkOverlap checks overlap-check as qcow2_update_options_prepare
// does: a template name, given as overlap-check or overlap-check.template
// (both only when equal), and one switch per kind of metadata. The
// switches come nested (keyval, JSON) or flat (qemu-io's QemuOpts, where
// a string overlap-check leaves overlap-check.* no object to nest in).
// minivmm checks every kind on every write whatever it says
// (overlap.go): the option only selects checks QEMU would leave out.
func checkOverlap(o block.Options) error {
	mode, _ := o["overlap-check"].(block.Options)
	flat := func(k string) string { return "overlap-check." + k }
	for _, k := range overlapKinds {
		if _, err := o.Bool(flat(k), false); err != nil {
			return err
		}
		if _, err := mode.Bool(k, false); err != nil {
			return fmt.Errorf("Parameter '%s' expects 'on' or 'off'", flat(k))
		}
	}
	overlap, template := "", ""
	var err error
	if mode != nil {
		template, err = mode.String("template", "")
	} else {
		overlap, err = o.String("overlap-check", "")
	}
	if err != nil {
		return err
	}
	if template == "" {
		if template, err = o.String(flat("template"), ""); err != nil {
			return err
		}
	}
	if overlap != "" && template != "" && overlap != template {
		return fmt.Errorf("Conflicting values for qcow2 options 'overlap-check' ('%s') and 'overlap-check.template' ('%s')", overlap, template)
	}
	if overlap == "" {
		overlap = template
	}
	if overlap == "" {
		overlap = "cached"
	}
	switch overlap {
	case "none", "constant", "cached", "all":
	default:
		return fmt.Errorf("Unsupported value '%s' for qcow2 option 'overlap-check'. Allowed are any of the following: none, constant, cached, all", overlap)
	}
	return nil
}

// joinOptions is QEMU's qcow2_join_options: a new overlap-check (or flat
// overlap-check.template) replaces the old one whole, flat keys too; a new cache-size drops the old L2 and refcount
// sizes; and an old cache-size goes when any cache size is set after the
// join and cache-size is not given anew (QEMU tests "any" where its
// comment says "all": its behaviour is what qemu-io shows, so kept).
func joinOptions(given, old block.Options) func(block.Options) {
	_, set := given["overlap-check"]
	_, flatSet := given["overlap-check.template"]
	if set || flatSet {
		delete(old, "overlap-check")
		for k := range old {
			if strings.HasPrefix(k, "overlap-check.") {
				delete(old, k)
			}
		}
	}
	_, newTotal := given["cache-size"]
	if newTotal {
		delete(old, "l2-cache-size")
		delete(old, "refcount-cache-size")
	}
	return func(joined block.Options) {
		_, a := joined["cache-size"]
		_, b := joined["l2-cache-size"]
		_, c := joined["refcount-cache-size"]
		if (a || b || c) && !newTotal {
			delete(joined, "cache-size")
		}
	}
}
