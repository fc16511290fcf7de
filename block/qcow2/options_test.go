package qcow2

import (
	"strings"
	"testing"

	"minivmm/block"
)

func TestCacheSizes(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name   string
		bits   uint32
		extL2  bool
		size   uint64
		opts   block.Options
		slices int
		slice  int
		err    string
	}{
		// 1 GiB at 64 KiB clusters: 128 KiB of L2 tables, all cached.
		{name: "default covers the disk", bits: 16, size: 1 << 30, slices: 2, slice: 65536},
		// 4 TiB at 64 KiB clusters needs 512 MiB: 32 MiB of 4 KiB slices.
		{name: "default for a large disk", bits: 16, size: 4 << 40, slices: 32 * mib / 4096, slice: 4096},
		// 4 TiB at 2 MiB clusters: 16 MiB of tables, all cached.
		{name: "2M clusters", bits: 21, size: 4 << 40, slices: 8, slice: 2 * mib},
		{name: "l2-cache-size", bits: 16, size: 1 << 40, opts: block.Options{"l2-cache-size": int64(mib)}, slices: 256, slice: 4096},
		{name: "l2-cache-size covering", bits: 16, size: 1 << 30, opts: block.Options{"l2-cache-size": int64(64 * mib)}, slices: 2, slice: 65536},
		{name: "entry size", bits: 16, size: 1 << 30, opts: block.Options{"l2-cache-entry-size": int64(512)}, slices: 256, slice: 512},
		{name: "cache-size shared", bits: 16, size: 1 << 40, opts: block.Options{"cache-size": int64(4 * mib)}, slices: (4*mib - 4*65536) / 4096, slice: 4096},
		{name: "cache-size with refcount", bits: 16, size: 1 << 40, opts: block.Options{"cache-size": int64(4 * mib), "refcount-cache-size": int64(mib)}, slices: 3 * mib / 4096, slice: 4096},
		{name: "minimum", bits: 16, size: 1 << 40, opts: block.Options{"l2-cache-size": int64(0)}, slices: 2, slice: 4096},
		{name: "all three", bits: 16, size: 1 << 30, opts: block.Options{"cache-size": int64(mib), "l2-cache-size": int64(mib), "refcount-cache-size": int64(mib)},
			err: "cache-size, l2-cache-size and refcount-cache-size may not be set at the same time"},
		{name: "l2 over combined", bits: 16, size: 1 << 30, opts: block.Options{"cache-size": int64(mib), "l2-cache-size": int64(2 * mib)},
			err: "l2-cache-size may not exceed cache-size"},
		{name: "refcount over combined", bits: 16, size: 1 << 30, opts: block.Options{"cache-size": int64(mib), "refcount-cache-size": int64(2 * mib)},
			err: "refcount-cache-size may not exceed cache-size"},
		{name: "entry size not a power of two", bits: 16, size: 1 << 30, opts: block.Options{"l2-cache-entry-size": int64(1000)},
			err: "L2 cache entry size must be a power of two between 512 and the cluster size (65536)"},
		{name: "entry size over cluster", bits: 12, size: 1 << 30, opts: block.Options{"l2-cache-entry-size": int64(8192)},
			err: "L2 cache entry size must be a power of two between 512 and the cluster size (4096)"},
		{name: "l2 cache too big", bits: 14, extL2: true, size: 1 << 50, opts: block.Options{"l2-cache-size": int64(1 << 62), "l2-cache-entry-size": int64(512)},
			err: "L2 cache size too big"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &header{Version: 3, ClusterBits: tc.bits, Size: tc.size}
			if tc.extL2 {
				h.IncompatibleFeatures = incompatExtL2
			}
			cfg, err := readCacheSizes(tc.opts, h)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v; want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.l2Slices != tc.slices || cfg.sliceBytes != tc.slice {
				t.Errorf("%d slices of %d bytes; want %d of %d", cfg.l2Slices, cfg.sliceBytes, tc.slices, tc.slice)
			}
		})
	}
}

func TestOtherOptions(t *testing.T) {
	path := newTestImage(16, 1<<20).write(t)
	v2 := newTestImage(16, 1<<20)
	v2.h.Version = 2
	v2path := v2.write(t)
	for _, tc := range []struct {
		path string
		opts block.Options
		err  string
	}{
		{path, block.Options{"lazy-refcounts": true, "pass-discard-request": false, "pass-discard-snapshot": false, "pass-discard-other": false, "overlap-check": "all", "cache-clean-interval": int64(0)}, ""},
		{path, block.Options{"pass-discard-request": true, "pass-discard-snapshot": true, "pass-discard-other": true}, ""},
		{path, block.Options{"pass-discard-other": "maybe"}, "Invalid parameter type for 'pass-discard-other', expected: boolean"},
		{path, block.Options{"refcount-cache-size": int64(65536)}, ""},
		{path, block.Options{"refcount-cache-size": int64(1 << 62)}, "Refcount cache size too big"},
		{path, block.Options{"overlap-check": "some"}, "Unsupported value 'some' for qcow2 option 'overlap-check'"},
		{path, block.Options{"cache-clean-interval": int64(1 << 40)}, "Cache clean interval too big"},
		{v2path, block.Options{"lazy-refcounts": true}, "Lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level"},
		{path, block.Options{"data-file": "x"}, "Cannot find device='x' nor node-name='x'"},
		{path, block.Options{"l2-cache-size": "big"}, "Invalid parameter type for 'l2-cache-size', expected: integer"},
	} {
		g := fixture(t)
		_, err := openQcow2(g, tc.path, tc.opts)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: %v; want %q", tc.opts, err, tc.err)
		}
	}
}
