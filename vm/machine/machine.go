// Package machine is minivmm's built-in machine: guest memory in a memfd,
// virtio-blk devices on the block layer's backends, and the built-in
// guest that drives them (its driver, and workloads run from "vCPU"
// goroutines). stop and cont pause the vCPUs and quiesce the devices.
package machine

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"minivmm/block"
	"minivmm/vm/blkdriver"
	"minivmm/vm/guestmem"
	"minivmm/vm/virtioblk"
	"minivmm/vm/workload"
)

// DefaultMemory is QEMU's default -m.
const DefaultMemory = 128 << 20

// Machine is a VM's devices and its built-in guest.
type Machine struct {
	graph *block.Graph
	mem   *guestmem.Memory
	gmem  *blkdriver.Memory

	// io is held shared by the devices' IO goroutines while they take
	// requests from the rings; Pause holds it exclusively.
	io   sync.RWMutex
	cpus cpuGate

	mu      sync.Mutex
	devices []*Device
	anon    int // anonymous devices made, for their QOM names
	runs    map[*run]struct{}
	closed  bool
}

// Device is a virtio-blk device and the guest driver bound to it.
type Device struct {
	cfg  DeviceConfig
	path string // QOM path: /machine/peripheral/ID or /machine/peripheral-anon/device[N]
	// backend is what the device's requests go through; holder is the
	// backend the device attached for its permissions (the same one
	// for a node, a second one on a -drive's node).
	backend *block.Backend
	holder  *block.Backend
	model   *virtioblk.Device
	tr      *transport
	disk    *blkdriver.Disk
	shadow  *workload.Shadow
	// unplugging: device_del was asked; unplugged is closed once the
	// device is gone.
	unplugging  bool
	unplugged   chan struct{}
	startUnplug func() // runs the unplug once
}

// ID is the device's id; empty for an anonymous one.
func (d *Device) ID() string { return d.cfg.ID }

// Path is the device's QOM path.
func (d *Device) Path() string { return d.path }

// Config is what the device was made with.
func (d *Device) Config() DeviceConfig { return d.cfg }

// Disk is the guest's driver for the device.
func (d *Device) Disk() *blkdriver.Disk { return d.disk }

// Err is what put the device in the needs-reset state, if anything.
func (d *Device) Err() error { return d.tr.Err() }

// New makes a machine with memSize bytes of guest memory (a memfd) whose
// devices use graph's backends; paused: its vCPUs wait for Resume (-S).
func New(graph *block.Graph, memSize int64, paused bool) (*Machine, error) {
	if memSize <= 0 {
		memSize = DefaultMemory
	}
	mem, err := guestmem.NewMemfd("minivmm-ram", memSize)
	if err != nil {
		return nil, err
	}
	b, err := mem.Slice(0, uint64(memSize))
	if err != nil {
		mem.Close()
		return nil, err
	}
	m := &Machine{graph: graph, mem: mem, gmem: blkdriver.NewMemory(b, 0), runs: map[*run]struct{}{}}
	m.cpus.init(paused)
	if paused {
		m.io.Lock()
	}
	return m, nil
}

// MemoryFd is the memfd holding guest memory (owned by the machine).
func (m *Machine) MemoryFd() int { return m.mem.Fd(0) }

// ErrDeviceNotFound is device_del of a device that does not exist.
type ErrDeviceNotFound struct{ ID string }

func (e *ErrDeviceNotFound) Error() string { return fmt.Sprintf("Device '%s' not found", e.ID) }

// PermConflictError is a device whose drive another device writes.
type PermConflictError struct {
	Node, Holder, Device string // the holder's and the new device's QOM paths
}

func (e *PermConflictError) Error() string {
	return fmt.Sprintf("Permission conflict on node '%s': permissions 'write' are both required by block device '%s/virtio-backend' (uses node '%s' as 'root' child) and unshared by block device '%s/virtio-backend' (uses node '%s' as 'root' child).",
		e.Node, e.Holder, e.Node, e.Device, e.Node)
}

// AddDevice plugs a device in (-device, device_add) and has the guest's
// driver set it up; on error nothing was added and no permission is held.
func (m *Machine) AddDevice(cfg DeviceConfig) (dev *Device, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("machine is shut down")
	}
	if cfg.ID != "" && m.findLocked(cfg.ID) != nil {
		return nil, fmt.Errorf("Duplicate device ID '%s'", cfg.ID)
	}
	d := &Device{cfg: cfg, shadow: workload.NewShadow()}
	if cfg.ID != "" {
		d.path = "/machine/peripheral/" + cfg.ID
	} else {
		d.path = fmt.Sprintf("/machine/peripheral-anon/device[%d]", m.anon)
	}
	if err := m.attachLocked(d); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.graph.Detach(d.holder)
		}
	}()
	readOnly := d.backend.Node().ReadOnly()
	d.model, err = virtioblk.New(d.backend, virtioblk.Config{
		NumQueues: cfg.NumQueues, QueueSize: cfg.QueueSize, ReadOnly: readOnly,
		Serial: cfg.Serial, WriteCache: true,
	})
	if err != nil {
		return nil, err
	}
	d.tr = newTransport(d.model, m.mem, cfg.NumQueues, cfg.QueueSize, &m.io)
	// The guest's driver probes the device it sees plugged in.
	if d.disk, err = blkdriver.Open(d.tr, m.gmem, blkdriver.Options{QueueSize: cfg.QueueSize}); err != nil {
		return nil, fmt.Errorf("virtio-blk: the guest could not set up %s: %w", d.path, err)
	}
	if cfg.ID == "" {
		m.anon++
	}
	m.devices = append(m.devices, d)
	return d, nil
}

// attachLocked finds the device's drive (a -drive backend, else a node)
// and takes the permissions a virtio-blk device takes on it: write,
// unless the node is read-only (the device is then read-only), shared
// with other writers only with share-rw=on.
func (m *Machine) attachLocked(d *Device) error {
	name := d.cfg.Drive
	var node *block.Node
	if b, ok := m.graph.Backend(name); ok {
		for _, o := range m.devices {
			if o.backend == b {
				return fmt.Errorf("Drive '%s' is already in use by another device", name)
			}
		}
		d.backend, node = b, b.Node()
	} else if n, ok := m.graph.Node(name); ok {
		node = n
	} else {
		return fmt.Errorf("Property 'virtio-blk-device.drive' can't find value '%s'", name)
	}
	perm := block.Perm{Write: !node.ReadOnly(), ShareWrite: d.cfg.ShareRW}
	holder, err := m.graph.Attach("", node, perm)
	if err != nil {
		for _, o := range m.devices {
			if o.holder.Node() == node {
				return &PermConflictError{Node: node.Name(), Holder: o.path, Device: d.path}
			}
		}
		return err
	}
	d.holder = holder
	if d.backend == nil {
		d.backend = holder
	}
	return nil
}

func (m *Machine) findLocked(id string) *Device {
	for _, d := range m.devices {
		if d.cfg.ID == id {
			return d
		}
	}
	return nil
}

// Devices lists the devices in the order they were added.
func (m *Machine) Devices() []*Device {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.devices)
}

// Device finds a device by id.
func (m *Machine) Device(id string) (*Device, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.findLocked(id)
	return d, d != nil
}

// ErrUnplugging is a device_del of a device already being unplugged.
type ErrUnplugging struct{ ID string }

func (e *ErrUnplugging) Error() string {
	return fmt.Sprintf("Device %s is already in the process of unplug", e.ID)
}

// DelDevice asks for a device to be unplugged (device_del). As in QEMU,
// the guest does the unplug: the workloads on the device stop, its
// driver lets it go once the requests it made complete (after cont, if
// the machine is stopped), and only then does the device leave its drive
// and deleted run (the caller's DEVICE_DELETED). The device is listed
// until then. The unplug begins when the caller calls start (once the
// command's reply is out, so that the event follows it, as in QEMU).
func (m *Machine) DelDevice(id string, deleted func(*Device, error)) (start func(), err error) {
	m.mu.Lock()
	d := m.findLocked(id)
	if d == nil {
		m.mu.Unlock()
		return nil, &ErrDeviceNotFound{ID: id}
	}
	if d.unplugging {
		m.mu.Unlock()
		return nil, &ErrUnplugging{ID: id}
	}
	d.unplugging = true
	d.unplugged = make(chan struct{})
	waits := m.cancelRunsLocked(d)
	d.startUnplug = sync.OnceFunc(func() { go m.finishUnplug(d, waits, deleted) })
	m.mu.Unlock()
	return d.startUnplug, nil
}

func (m *Machine) finishUnplug(d *Device, waits []*run, deleted func(*Device, error)) {
	for _, r := range waits {
		<-r.done
	}
	err := m.unplug(d)
	m.mu.Lock()
	m.devices = slices.DeleteFunc(m.devices, func(o *Device) bool { return o == d })
	m.mu.Unlock()
	close(d.unplugged)
	if deleted != nil {
		deleted(d, err)
	}
}

// cancelRunsLocked stops the workloads running on d (every one, if d is
// nil) and returns them.
func (m *Machine) cancelRunsLocked(d *Device) []*run {
	var out []*run
	for r := range m.runs {
		if d == nil || slices.Contains(r.devices, d) {
			r.cancel()
			out = append(out, r)
		}
	}
	return out
}

// unplug is the guest's driver releasing the device, then the device
// leaving its drive.
func (m *Machine) unplug(d *Device) error {
	// A stopped machine's devices take no requests: the driver's
	// requests in flight wait for cont, as a paused guest's would.
	err := d.disk.Close()
	return errors.Join(err, m.graph.Detach(d.holder))
}

// Pause stops the vCPUs (no new requests) and the devices' IO (no
// request taken from a ring), then waits for the requests in flight:
// QEMU's vm_stop before it drains the block layer.
func (m *Machine) Pause() {
	if !m.cpus.pause() {
		return
	}
	m.io.Lock()
	for _, d := range m.Devices() {
		d.model.Drain()
	}
}

// Resume lets the devices and the vCPUs run again (cont); requests the
// guest made available meanwhile are served.
func (m *Machine) Resume() {
	if m.cpus.resume() {
		m.io.Unlock()
	}
}

// Close stops the workloads, unplugs every device and frees guest memory.
func (m *Machine) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	waits := m.cancelRunsLocked(nil)
	m.mu.Unlock()
	m.Resume() // a stopped guest lets its devices go too
	for _, r := range waits {
		<-r.done
	}
	var errs []error
	for _, d := range m.Devices() {
		m.mu.Lock()
		pending := d.unplugging
		d.unplugging = true
		m.mu.Unlock()
		if pending {
			d.startUnplug() // in case its caller never did
			<-d.unplugged
			continue
		}
		errs = append(errs, m.unplug(d))
	}
	m.mu.Lock()
	m.devices = nil
	m.mu.Unlock()
	errs = append(errs, m.mem.Close())
	return errors.Join(errs...)
}

// CancelWorkloads ends the workloads running (the VMM is exiting); they
// return their results so far.
func (m *Machine) CancelWorkloads() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cancelRunsLocked(nil)
}

// cpuGate holds the vCPUs while the machine is stopped.
type cpuGate struct {
	mu     sync.Mutex
	cond   sync.Cond
	paused bool
}

func (g *cpuGate) init(paused bool) {
	g.cond.L = &g.mu
	g.paused = paused
}

// wait blocks while the vCPUs are stopped; false if cancel closed
// meanwhile.
func (g *cpuGate) wait(cancel <-chan struct{}) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.paused {
		select {
		case <-cancel:
			return false
		default:
		}
		g.cond.Wait()
	}
	return true
}

// stopped tells whether the vCPUs are stopped.
func (g *cpuGate) stopped() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused
}

// wake makes waiters look at their cancel channel.
func (g *cpuGate) wake() {
	g.mu.Lock()
	g.cond.Broadcast()
	g.mu.Unlock()
}

// pause reports whether the gate was running.
func (g *cpuGate) pause() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	was := !g.paused
	g.paused = true
	return was
}

// resume reports whether the gate was paused.
func (g *cpuGate) resume() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	was := g.paused
	g.paused = false
	g.cond.Broadcast()
	return was
}
