// Package virtioblk is a virtio-blk device (virtio 1.x, section 5.2): it
// serves the requests a driver puts on its virtqueues from a block
// device, straight into and out of guest memory, many at once.
package virtioblk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"minivmm/block"
	"minivmm/vm/virtq"
)

// Disk is what the device serves requests from: a *block.Backend (it
// follows its node through snapshots) or a *block.Node.
type Disk interface {
	ReadV(bufs [][]byte, off int64) (int, error)
	WriteV(bufs [][]byte, off int64, flags block.WriteFlags) (int, error)
	Flush() error
	Discard(off, length int64) error
	WriteZeroes(off, length int64, unmap bool) error
	Length() int64
}

// Feature bits (virtio 1.x 5.2.3; ring and version bits in package virtq).
const (
	FeatureSizeMax     = 1 << 1
	FeatureSegMax      = 1 << 2
	FeatureGeometry    = 1 << 4
	FeatureRO          = 1 << 5
	FeatureBlkSize     = 1 << 6
	FeatureFlush       = 1 << 9
	FeatureTopology    = 1 << 10
	FeatureConfigWCE   = 1 << 11
	FeatureMQ          = 1 << 12
	FeatureDiscard     = 1 << 13
	FeatureWriteZeroes = 1 << 14
)

// Limits the device reports, as qemu-storage-daemon's vhost-user-blk
// export does (block/export/virtio-blk-handler.h).
const (
	MaxDiscardSectors     = 32768
	MaxWriteZeroesSectors = 32768
	// DefaultSegMax is seg_max when Config.QueueSize is not given
	// (qemu-storage-daemon: 128 - 2).
	DefaultSegMax = 126
	// maxRequestSectors is QEMU's BDRV_REQUEST_MAX_SECTORS.
	maxRequestSectors = (1<<31 - 1) >> 9
	sectorSize        = 512
	// IDBytes is the length of a GET_ID answer (VIRTIO_BLK_ID_BYTES).
	IDBytes = 20
	// ConfigSize is the length of struct virtio_blk_config, up to and
	// including the secure-erase fields (zero: not offered).
	ConfigSize = 72
	// ConfigWCEOffset is the offset of the writable wce byte.
	ConfigWCEOffset = 32
)

// Config is the device's configuration.
type Config struct {
	// NumQueues is the number of request queues (default 1).
	NumQueues int
	// QueueSize is the size of each queue; seg_max is QueueSize-2 (as
	// QEMU's virtio-blk-pci), or DefaultSegMax when 0.
	QueueSize int
	// LogicalBlockSize is the block size the guest sees (default 512): a
	// power of two from 512 to 2 MiB, as QEMU's check_block_size.
	LogicalBlockSize uint32
	// ReadOnly offers VIRTIO_BLK_F_RO and fails writes with IOERR.
	ReadOnly bool
	// Serial is what GET_ID answers (at most 20 bytes are sent).
	Serial string
	// WriteCache is the initial write-cache mode (the config's wce): off
	// makes every write FUA, as QEMU's writethrough.
	WriteCache bool
	// OnIOError, if set, hears of each request that failed in the block
	// layer (the request gets IOERR all the same).
	OnIOError func(error)
	// OnNeedsReset, if set, hears once that the driver broke a queue
	// (the error wraps virtq.ErrNeedsReset): the transport sets
	// DEVICE_NEEDS_RESET. Serve returns the error too, where its own
	// goroutine met it.
	OnNeedsReset func(error)
}

// Device is a virtio-blk device over a Disk.
type Device struct {
	disk     Disk
	cfg      Config
	offered  uint64
	acked    atomic.Uint64
	wce      atomic.Bool
	broken   atomic.Pointer[error]
	inflight inflight
	reqs     sync.Pool   // *request, with their lists
	stopped  atomic.Bool // Stop: Serve takes nothing
}

// New makes a device serving disk.
func New(disk Disk, cfg Config) (*Device, error) {
	if cfg.NumQueues == 0 {
		cfg.NumQueues = 1
	}
	if cfg.LogicalBlockSize == 0 {
		cfg.LogicalBlockSize = sectorSize
	}
	switch lbs := cfg.LogicalBlockSize; {
	case cfg.NumQueues < 1 || cfg.NumQueues > 1024:
		return nil, fmt.Errorf("virtio-blk: num-queues %d is not in 1..1024", cfg.NumQueues)
	case cfg.QueueSize != 0 && (cfg.QueueSize < 4 || cfg.QueueSize > virtq.MaxSize || cfg.QueueSize&(cfg.QueueSize-1) != 0):
		return nil, fmt.Errorf("virtio-blk: queue-size %d is not a power of 2 in 4..%d", cfg.QueueSize, virtq.MaxSize)
	case lbs < 512 || lbs > 2<<20 || lbs&(lbs-1) != 0:
		return nil, fmt.Errorf("virtio-blk: logical block size %d is not a power of 2 from 512 to 2097152", lbs)
	}
	d := &Device{disk: disk, cfg: cfg}
	d.wce.Store(cfg.WriteCache)
	d.offered = virtq.FeatureVersion1 | virtq.FeatureIndirectDesc | virtq.FeatureEventIdx |
		FeatureSegMax | FeatureBlkSize | FeatureFlush | FeatureTopology | FeatureConfigWCE |
		FeatureMQ | FeatureDiscard | FeatureWriteZeroes
	if cfg.ReadOnly {
		d.offered |= FeatureRO
	}
	d.inflight.cond.L = &d.inflight.mu
	d.reqs.New = newRequest
	return d, nil
}

// Features is what the device offers.
func (d *Device) Features() uint64 { return d.offered }

// Ack takes the features the driver accepted (FEATURES_OK). Only modern
// (VERSION_1) drivers are served.
func (d *Device) Ack(features uint64) error {
	if extra := features &^ d.offered; extra != 0 {
		return fmt.Errorf("virtio-blk: driver accepted features 0x%x the device does not offer", extra)
	}
	if features&virtq.FeatureVersion1 == 0 {
		return errors.New("virtio-blk: driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)")
	}
	d.acked.Store(features)
	if features&FeatureConfigWCE == 0 {
		// Without CONFIG_WCE the cache is on exactly when the driver
		// flushes (QEMU's virtio_blk_set_features).
		d.wce.Store(features&FeatureFlush != 0)
	}
	return nil
}

// Acked is what the driver accepted.
func (d *Device) Acked() uint64 { return d.acked.Load() }

// Config is struct virtio_blk_config as the device fills it, little
// endian, ConfigSize bytes: a front end hands the driver a prefix.
func (d *Device) Config() []byte {
	c := make([]byte, ConfigSize)
	le := binary.LittleEndian
	lbs := d.cfg.LogicalBlockSize
	segMax := uint32(DefaultSegMax)
	if d.cfg.QueueSize > 0 {
		segMax = uint32(d.cfg.QueueSize - 2)
	}
	le.PutUint64(c[0:], uint64(d.disk.Length())/sectorSize) // capacity
	le.PutUint32(c[12:], segMax)
	le.PutUint32(c[20:], lbs) // blk_size
	le.PutUint16(c[26:], 1)   // min_io_size
	le.PutUint32(c[28:], 1)   // opt_io_size
	if d.wce.Load() {
		c[ConfigWCEOffset] = 1
	}
	le.PutUint16(c[34:], uint16(d.cfg.NumQueues))
	le.PutUint32(c[36:], MaxDiscardSectors)
	le.PutUint32(c[40:], 1) // max_discard_seg
	le.PutUint32(c[44:], lbs/sectorSize)
	le.PutUint32(c[48:], MaxWriteZeroesSectors)
	le.PutUint32(c[52:], 1) // max_write_zeroes_seg
	c[56] = 1               // write_zeroes_may_unmap
	return c
}

// WriteConfig is a driver's write to the config space: only the wce byte
// is writable (as QEMU's set_config).
func (d *Device) WriteConfig(off int, data []byte) error {
	if off != ConfigWCEOffset || len(data) != 1 {
		return fmt.Errorf("virtio-blk: config write of %d bytes at %d: only wce (1 byte at %d) is writable", len(data), off, ConfigWCEOffset)
	}
	d.wce.Store(data[0] != 0)
	return nil
}

// WriteCache reports the write-cache mode in force.
func (d *Device) WriteCache() bool { return d.wce.Load() }

// Err is what put the device in the needs-reset state, or nil.
func (d *Device) Err() error {
	if p := d.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// Reset clears the needs-reset state (the driver reset the device). The
// caller has drained it and will make new queues.
func (d *Device) Reset() {
	d.Drain()
	d.broken.Store(nil)
	d.acked.Store(0)
	d.wce.Store(d.cfg.WriteCache)
}

func (d *Device) fail(err error) error {
	if d.broken.CompareAndSwap(nil, &err) && d.cfg.OnNeedsReset != nil {
		d.cfg.OnNeedsReset(err)
	}
	return d.Err()
}
