package blkdriver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// Config is the device's configuration space (5.2.4), as far as the
// negotiated features make its fields valid; the others are zero.
type Config struct {
	Capacity              uint64 // in 512-byte sectors
	SizeMax, SegMax       uint32
	BlkSize               uint32
	PhysBlockExp          uint8
	AlignmentOffset       uint8
	MinIOSize             uint16
	OptIOSize             uint32
	Writeback             bool
	NumQueues             uint16
	MaxDiscardSectors     uint32
	MaxDiscardSeg         uint32
	DiscardAlignment      uint32
	MaxWriteZeroesSectors uint32
	MaxWriteZeroesSeg     uint32
	WriteZeroesMayUnmap   bool
}

// parseConfig reads the config space b for the features f.
func parseConfig(b []byte, f uint64) (Config, error) {
	if len(b) < 60 {
		return Config{}, fmt.Errorf("blkdriver: config space of %d bytes, want 60", len(b))
	}
	le := binary.LittleEndian
	c := Config{Capacity: le.Uint64(b[0:]), BlkSize: SectorSize}
	has := func(bit uint) bool { return f&Bit(bit) != 0 }
	if has(FeatSizeMax) {
		c.SizeMax = le.Uint32(b[8:])
	}
	if has(FeatSegMax) {
		c.SegMax = le.Uint32(b[12:])
	}
	if has(FeatBlkSize) {
		c.BlkSize = le.Uint32(b[20:])
		if c.BlkSize < SectorSize || c.BlkSize&(c.BlkSize-1) != 0 {
			return Config{}, fmt.Errorf("blkdriver: device block size %d", c.BlkSize)
		}
	}
	if has(FeatTopology) {
		c.PhysBlockExp, c.AlignmentOffset = b[24], b[25]
		c.MinIOSize, c.OptIOSize = le.Uint16(b[26:]), le.Uint32(b[28:])
	}
	c.Writeback = has(FeatFlush) // without CONFIG_WCE, FLUSH means a write-back cache
	if has(FeatConfigWCE) {
		c.Writeback = b[32] != 0
	}
	c.NumQueues = 1
	if has(FeatMQ) {
		c.NumQueues = le.Uint16(b[34:])
		if c.NumQueues == 0 {
			return Config{}, errors.New("blkdriver: device offers MQ with 0 queues")
		}
	}
	if has(FeatDiscard) {
		c.MaxDiscardSectors, c.MaxDiscardSeg, c.DiscardAlignment = le.Uint32(b[36:]), le.Uint32(b[40:]), le.Uint32(b[44:])
	}
	if has(FeatWriteZeroes) {
		c.MaxWriteZeroesSectors, c.MaxWriteZeroesSeg = le.Uint32(b[48:]), le.Uint32(b[52:])
		c.WriteZeroesMayUnmap = b[56] != 0
	}
	return c, nil
}

// Options shape what the driver asks of a device.
type Options struct {
	// Refuse lists features the driver must not accept even if offered
	// (to test both sides of INDIRECT_DESC and EVENT_IDX).
	Refuse uint64
	// QueueSize is the size wanted for each queue (default 256); it is
	// cut to what the device allows, and to a power of two.
	QueueSize int
	// Queues is how many queues to use (default: all the device has).
	Queues int
}

// Disk is a virtio-blk device the driver has set up.
type Disk struct {
	t        Transport
	mem      *Memory
	features uint64
	cfg      Config
	queues   []*Queue
}

// maxIndirect bounds an indirect table: header, status and up to 32 data
// segments.
const maxIndirect = 34

// Open initialises the device behind t (3.1.1): features, config, queues,
// DRIVER_OK. On error the device is reset and nothing stays allocated.
func Open(t Transport, mem *Memory, o Options) (d *Disk, err error) {
	offered, err := t.DeviceFeatures()
	if err != nil {
		return nil, err
	}
	if offered&Bit(FeatVersion1) == 0 {
		return nil, fmt.Errorf("blkdriver: device does not offer VIRTIO_F_VERSION_1 (features %#x)", offered)
	}
	d = &Disk{t: t, mem: mem, features: offered & supported &^ o.Refuse}
	defer func() {
		if err != nil {
			t.Reset()
			d.freeQueues()
		}
	}()
	if err := t.SetFeatures(d.features); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFeatures, err)
	}
	b, err := t.Config()
	if err != nil {
		return nil, err
	}
	if d.cfg, err = parseConfig(b, d.features); err != nil {
		return nil, err
	}
	n := int(d.cfg.NumQueues)
	if o.Queues > 0 && o.Queues < n {
		n = o.Queues
	}
	want := o.QueueSize
	if want <= 0 {
		want = 256
	}
	indMax := 0
	if d.Has(FeatIndirect) {
		indMax = maxIndirect
	}
	for i := 0; i < n; i++ {
		size := min(want, t.MaxQueueSize(i), 32768)
		if size <= 0 {
			return nil, fmt.Errorf("blkdriver: device has no queue %d", i)
		}
		size = 1 << (bits.Len(uint(size)) - 1)
		q, err := newQueue(i, t, mem, uint16(size), d.Has(FeatEventIdx), min(indMax, size))
		if err != nil {
			return nil, err
		}
		d.queues = append(d.queues, q)
		if err := t.SetupQueue(i, q.addr()); err != nil {
			return nil, err
		}
	}
	if err := t.Start(); err != nil {
		return nil, err
	}
	for _, q := range d.queues {
		q.stop, q.stopped = make(chan struct{}), make(chan struct{})
		go q.run()
	}
	return d, nil
}

func (d *Disk) freeQueues() {
	for _, q := range d.queues {
		q.free()
	}
	d.queues = nil
}

// Has tells whether feature bit f was negotiated.
func (d *Disk) Has(f uint) bool { return d.features&Bit(f) != 0 }

// Features are the negotiated features.
func (d *Disk) Features() uint64 { return d.features }

// Config is the device's configuration as read at Open.
func (d *Disk) Config() Config { return d.cfg }

// Capacity is the disk's size in bytes.
func (d *Disk) Capacity() int64 { return int64(d.cfg.Capacity) * SectorSize }

// ReadOnly tells whether the device refuses writes.
func (d *Disk) ReadOnly() bool { return d.Has(FeatRO) }

// Queues are the disk's queues.
func (d *Disk) Queues() []*Queue { return d.queues }

// Memory is the guest memory the disk's buffers come from.
func (d *Disk) Memory() *Memory { return d.mem }

// ID asks the device for its serial number (GET_ID).
func (d *Disk) ID() (string, error) {
	buf, err := d.mem.Alloc(IDBytes, 8)
	if err != nil {
		return "", err
	}
	defer d.mem.Free(buf)
	if err := d.queues[0].Do(&Request{Type: TypeGetID, Data: []Region{buf}}); err != nil {
		return "", err
	}
	id, _, _ := bytes.Cut(buf.B, []byte{0})
	return string(id), nil
}

// Broken is a transport that can tell that its device needs a reset
// (it will complete nothing more); the driver asks for it by type
// assertion.
type Broken interface {
	Err() error
}

// Close waits for the requests in flight, resets the device and gives
// the rings back to guest memory. Requests submitted after it starts
// fail with ErrClosed. A device that needs a reset completes nothing
// more: its requests in flight are failed (status 0xff, "not completed")
// once it is reset, as a driver fails them after a reset. So is a device
// that leaves requests unanswered for closeWait: the reset then takes
// back what it completed (a completion whose notification went missing
// included) and fails the rest, so a close never hangs on a device.
func (d *Disk) Close() error {
	broken := func() bool {
		b, ok := d.t.(Broken)
		return ok && b.Err() != nil
	}
	deadline := time.Now().Add(closeWait)
	for _, q := range d.queues {
		q.close()
		for q.InFlight() > 0 && q.Err() == nil && !broken() && time.Now().Before(deadline) {
			// Rare and short (an unplug): polling keeps the wait
			// simple where the device may never answer.
			time.Sleep(time.Millisecond)
		}
	}
	err := d.t.Reset()
	for _, q := range d.queues {
		close(q.stop)
		<-q.stopped
		q.reap() // what completed before the reset
		q.failInFlight()
	}
	d.freeQueues()
	return err
}

// closeWait bounds how long Close waits for a device's answers.
const closeWait = 10 * time.Second

// Segment is one range of a DISCARD or WRITE_ZEROES request (5.2.6).
type Segment struct {
	Sector  uint64
	Sectors uint32
	Unmap   bool
}

// PutSegments writes segs into b (16 bytes each) as the device reads them.
func PutSegments(b []byte, segs []Segment) {
	for i, s := range segs {
		e := b[16*i:]
		binary.LittleEndian.PutUint64(e[0:], s.Sector)
		binary.LittleEndian.PutUint32(e[8:], s.Sectors)
		flags := uint32(0)
		if s.Unmap {
			flags = 1
		}
		binary.LittleEndian.PutUint32(e[12:], flags)
	}
}
