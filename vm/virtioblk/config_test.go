package virtioblk_test

import (
	"encoding/binary"
	"testing"

	"minivmm/vm/virtioblk"
	"minivmm/vm/virtq"
)

// TestConfigLayout: struct virtio_blk_config as qemu-storage-daemon's
// vhost-user-blk export fills it (capacity in 512-byte sectors, seg_max,
// blk_size, topology, wce, num_queues, discard and write-zeroes limits),
// at the offsets of linux/virtio_blk.h.
func TestConfigLayout(t *testing.T) {
	for _, tc := range []struct {
		cfg    virtioblk.Config
		segMax uint32
	}{
		{virtioblk.Config{}, 126},
		{virtioblk.Config{NumQueues: 4, QueueSize: 256, LogicalBlockSize: 4096, WriteCache: true}, 254},
	} {
		dev, err := virtioblk.New(nullDisk{}, tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		c := dev.Config()
		le := binary.LittleEndian
		lbs := max(tc.cfg.LogicalBlockSize, 512)
		wce := byte(0)
		if tc.cfg.WriteCache {
			wce = 1
		}
		for _, f := range []struct {
			name      string
			off, size int
			want      uint64
		}{
			{"capacity", 0, 8, benchImage / 512},
			{"size_max", 8, 4, 0},
			{"seg_max", 12, 4, uint64(tc.segMax)},
			{"blk_size", 20, 4, uint64(lbs)},
			{"physical_block_exp", 24, 1, 0},
			{"min_io_size", 26, 2, 1},
			{"opt_io_size", 28, 4, 1},
			{"wce", 32, 1, uint64(wce)},
			{"num_queues", 34, 2, uint64(max(tc.cfg.NumQueues, 1))},
			{"max_discard_sectors", 36, 4, 32768},
			{"max_discard_seg", 40, 4, 1},
			{"discard_sector_alignment", 44, 4, uint64(lbs / 512)},
			{"max_write_zeroes_sectors", 48, 4, 32768},
			{"max_write_zeroes_seg", 52, 4, 1},
			{"write_zeroes_may_unmap", 56, 1, 1},
		} {
			var got uint64
			switch f.size {
			case 1:
				got = uint64(c[f.off])
			case 2:
				got = uint64(le.Uint16(c[f.off:]))
			case 4:
				got = uint64(le.Uint32(c[f.off:]))
			case 8:
				got = le.Uint64(c[f.off:])
			}
			if got != f.want {
				t.Errorf("%+v: %s = %d, want %d", tc.cfg, f.name, got, f.want)
			}
		}
		if len(c) != virtioblk.ConfigSize {
			t.Errorf("config of %d bytes", len(c))
		}
	}
}

// TestFeatures: what the device offers (QSD's set, RO when read-only),
// what Ack refuses, and how the write cache follows the driver.
func TestFeatures(t *testing.T) {
	dev, err := virtioblk.New(nullDisk{}, virtioblk.Config{})
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(virtq.FeatureVersion1 | virtq.FeatureIndirectDesc | virtq.FeatureEventIdx |
		virtioblk.FeatureSegMax | virtioblk.FeatureBlkSize | virtioblk.FeatureFlush | virtioblk.FeatureTopology |
		virtioblk.FeatureConfigWCE | virtioblk.FeatureMQ | virtioblk.FeatureDiscard | virtioblk.FeatureWriteZeroes)
	if got := dev.Features(); got != want {
		t.Fatalf("features %#x, want %#x", got, want)
	}
	ro, _ := virtioblk.New(nullDisk{}, virtioblk.Config{ReadOnly: true})
	if ro.Features() != want|virtioblk.FeatureRO {
		t.Fatalf("read-only features %#x", ro.Features())
	}
	if err := dev.Ack(want | 1<<30); err == nil {
		t.Error("Ack took a feature not offered")
	}
	if err := dev.Ack(want &^ virtq.FeatureVersion1); err == nil {
		t.Error("Ack took a legacy driver")
	}
	// Without CONFIG_WCE the cache is on exactly when FLUSH is accepted.
	for _, f := range []uint64{virtioblk.FeatureFlush, 0} {
		if err := dev.Ack(virtq.FeatureVersion1 | f); err != nil {
			t.Fatal(err)
		}
		if dev.WriteCache() != (f != 0) {
			t.Errorf("acked %#x: write cache %v", f, dev.WriteCache())
		}
	}
	if err := dev.Ack(want); err != nil {
		t.Fatal(err)
	}
	if err := dev.WriteConfig(virtioblk.ConfigWCEOffset, []byte{1}); err != nil || !dev.WriteCache() || dev.Config()[virtioblk.ConfigWCEOffset] != 1 {
		t.Fatalf("wce write: %v, cache %v", err, dev.WriteCache())
	}
	if err := dev.WriteConfig(0, make([]byte, 8)); err == nil {
		t.Error("capacity written")
	}
	for _, cfg := range []virtioblk.Config{{LogicalBlockSize: 1000}, {LogicalBlockSize: 256}, {QueueSize: 100}, {NumQueues: -1}} {
		if _, err := virtioblk.New(nullDisk{}, cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// TestLogicalBlockSize: with 4 KiB logical blocks a request must start on
// one (QEMU's virtio_blk_sect_range_ok); its length need only be whole
// sectors.
func TestLogicalBlockSize(t *testing.T) {
	checkFds(t)
	r := newRig(t, nullDisk{}, virtioblk.Config{LogicalBlockSize: 4096}, 0)
	for _, tc := range []struct {
		q      req
		status byte
	}{
		{req{typ: virtioblk.TypeIn, sector: 8, in: 4096}, virtioblk.StatusOK},
		{req{typ: virtioblk.TypeIn, sector: 1, in: 4096}, virtioblk.StatusIOErr},
		{req{typ: virtioblk.TypeIn, sector: 16, in: 512}, virtioblk.StatusOK},
		{req{typ: virtioblk.TypeDiscard, out: segment(4, 8, 0)}, virtioblk.StatusIOErr},
		{req{typ: virtioblk.TypeDiscard, out: segment(8, 8, 0)}, virtioblk.StatusOK},
	} {
		q := tc.q
		r.add(0, &q, false)
		r.serve(0)
		if st := r.status(&q); st != tc.status {
			t.Errorf("type %d sector %d: status %d, want %d", q.typ, q.sector, st, tc.status)
		}
	}
}
