// Package vutransport runs the built-in guest's virtio-blk driver
// (package blkdriver) against any vhost-user-blk back end — minivmm's
// export or qemu-storage-daemon's — through the Go vhost-user front end
// (package vhostuser), so that both back ends are driven, and measured,
// by the same client.
package vutransport

import (
	"fmt"

	"minivmm/vm/blkdriver"
	"minivmm/vm/guestmem"
	"minivmm/vm/vhostuser"
)

// Transport is a blkdriver.Transport over a vhost-user connection.
type Transport struct {
	fe   *vhostuser.Frontend
	irqs []<-chan struct{} // by queue, fixed at Start
}

var _ blkdriver.Transport = (*Transport)(nil)

// New drives fe's device.
func New(fe *vhostuser.Frontend) *Transport { return &Transport{fe: fe} }

func (t *Transport) DeviceFeatures() (uint64, error) { return t.fe.DeviceFeatures() }
func (t *Transport) SetFeatures(f uint64) error      { return t.fe.SetFeatures(f) }
func (t *Transport) Config() ([]byte, error)         { return t.fe.Config() }
func (t *Transport) MaxQueueSize(q int) int          { return t.fe.MaxQueueSize(q) }
func (t *Transport) Kick(q int)                      { t.fe.Kick(q) }

func (t *Transport) SetupQueue(q int, r blkdriver.RingAddr) error {
	return t.fe.SetupQueue(q, r.Size, r.Desc, r.Avail, r.Used)
}

// Start starts the queues and keeps their interrupt channels: the
// driver's queue goroutines read them until after Reset, which drops the
// front end's queues.
func (t *Transport) Start() error {
	if err := t.fe.Start(); err != nil {
		return err
	}
	t.irqs = make([]<-chan struct{}, 0, 8)
	for q := 0; t.fe.MaxQueueSize(q) > 0; q++ {
		t.irqs = append(t.irqs, t.fe.Interrupt(q))
	}
	return nil
}

func (t *Transport) Interrupt(q int) <-chan struct{} {
	if q < 0 || q >= len(t.irqs) {
		return nil
	}
	return t.irqs[q]
}

func (t *Transport) Reset() error { return t.fe.Reset() }

// Disk is a virtio-blk disk on a vhost-user socket, with the guest
// memory its driver runs in.
type Disk struct {
	*blkdriver.Disk
	mem *guestmem.Memory
	fe  *vhostuser.Frontend
}

// Open connects to the vhost-user-blk back end at path, gives it memSize
// bytes of shared guest memory (a memfd), and sets its device up with the
// built-in driver.
func Open(path string, memSize int64, o blkdriver.Options) (*Disk, error) {
	mem, err := guestmem.NewMemfd("vhost-user-guest", memSize)
	if err != nil {
		return nil, err
	}
	b, err := mem.Slice(0, uint64(memSize))
	if err != nil {
		mem.Close()
		return nil, err
	}
	fe, err := vhostuser.Dial(path, mem)
	if err != nil {
		mem.Close()
		return nil, err
	}
	d, err := blkdriver.Open(New(fe), blkdriver.NewMemory(b, 0), o)
	if err != nil {
		fe.Close()
		mem.Close()
		return nil, fmt.Errorf("vhost-user-blk %s: %w", path, err)
	}
	return &Disk{Disk: d, mem: mem, fe: fe}, nil
}

// Close resets the device, disconnects and frees the guest memory.
func (d *Disk) Close() error {
	err := d.Disk.Close()
	if cerr := d.fe.Close(); err == nil {
		err = cerr
	}
	if cerr := d.mem.Close(); err == nil {
		err = cerr
	}
	return err
}
