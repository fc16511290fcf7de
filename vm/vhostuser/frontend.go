package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/vm/guestmem"
)

// Frontend is a vhost-user front end for a virtio-blk back end (minivmm's
// export or qemu-storage-daemon's): the part of QEMU's vhost-user-blk-pci
// that a driver running in this process needs. The driver puts its rings
// and buffers in mem, whose regions are shared with the back end; the
// methods follow the order of a virtio device's initialisation.
type Frontend struct {
	conn          *net.UnixConn
	mem           *guestmem.Memory
	protoFeatures uint64
	numQueues     int

	mu     sync.Mutex // one request and its reply at a time
	queues []*feQueue

	wantInflight bool
	inflightFd   int // the back end's inflight file (INFLIGHT_SHMFD), -1: none
}

type feQueue struct {
	size              uint16
	desc, avail, used uint64 // guest-physical
	kick              int    // eventfd, -1 until Start
	call              *os.File
	irq               chan struct{}
	done              chan struct{}
}

// frontendProtocol is what the front end asks for, of what it knows.
const frontendProtocol = 1<<ProtocolMQ | 1<<ProtocolReplyAck | 1<<ProtocolConfig

// Dial connects to a back end's socket and negotiates the protocol.
func Dial(path string, mem *guestmem.Memory) (*Frontend, error) {
	return dialFrontend(path, mem, false, -1)
}

// DialInflight is Dial with inflight tracking (INFLIGHT_SHMFD) from Start
// on: the back end records in a file the front end keeps which requests
// it took and has not completed. inflightFd, if not -1, is such a file
// from a previous connection (InflightFd's; dup'ed here): a back end
// started in place of a dead one resubmits what that one left in flight,
// as with QEMU's vhost-user-blk on reconnecting.
func DialInflight(path string, mem *guestmem.Memory, inflightFd int) (*Frontend, error) {
	return dialFrontend(path, mem, true, inflightFd)
}

func dialFrontend(path string, mem *guestmem.Memory, inflight bool, inflightFd int) (*Frontend, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	f := &Frontend{conn: c, mem: mem, inflightFd: -1, wantInflight: inflight}
	if inflightFd >= 0 {
		d, err := unix.FcntlInt(uintptr(inflightFd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			c.Close()
			return nil, err
		}
		f.inflightFd = d
	}
	if err := f.handshake(); err != nil {
		closeFd(f.inflightFd)
		c.Close()
		return nil, fmt.Errorf("vhost-user %s: %w", path, err)
	}
	return f, nil
}

func (f *Frontend) handshake() error {
	features, err := f.getU64(GetFeatures)
	if err != nil {
		return err
	}
	if features&(1<<FeatureProtocolFeatures) == 0 {
		return errors.New("back end does not speak protocol features")
	}
	pf, err := f.getU64(GetProtocolFeatures)
	if err != nil {
		return err
	}
	if pf&(1<<ProtocolConfig) == 0 {
		return errors.New("back end does not offer its config space (VHOST_USER_PROTOCOL_F_CONFIG)")
	}
	want := uint64(frontendProtocol)
	if f.wantInflight {
		if pf&(1<<ProtocolInflightShmfd) == 0 {
			return errors.New("back end does not offer VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD")
		}
		want |= 1 << ProtocolInflightShmfd
	}
	f.protoFeatures = pf & want
	if err := f.send(SetProtocolFeatures, u64Payload(f.protoFeatures)); err != nil {
		return err
	}
	f.numQueues = 1
	if f.protoFeatures&(1<<ProtocolMQ) != 0 {
		n, err := f.getU64(GetQueueNum)
		if err != nil {
			return err
		}
		f.numQueues = int(min(n, 1024))
	}
	f.queues = make([]*feQueue, f.numQueues)
	return f.send(SetOwner, nil)
}

// call sends a request that has a reply and returns the reply's payload.
func (f *Frontend) call(req Request, payload []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := writeMessage(f.conn, &Message{Request: req, Flags: flagVersion, Payload: payload}); err != nil {
		return nil, err
	}
	r, err := f.reply(req)
	if err != nil {
		return nil, err
	}
	return r.Payload, nil
}

func (f *Frontend) reply(req Request) (*Message, error) {
	f.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer f.conn.SetReadDeadline(time.Time{})
	var hdr [headerSize]byte
	if _, err := readFullConn(f.conn, hdr[:]); err != nil {
		return nil, fmt.Errorf("%v: reading the reply: %w", req, err)
	}
	le := binary.LittleEndian
	m := &Message{Request: Request(le.Uint32(hdr[:])), Flags: le.Uint32(hdr[4:])}
	size := le.Uint32(hdr[8:])
	if m.Request != req || m.Flags&flagReply == 0 || size > maxPayload {
		return nil, fmt.Errorf("%v: the back end answered %v (flags %#x, %d bytes)", req, m.Request, m.Flags, size)
	}
	m.Payload = make([]byte, size)
	if _, err := readFullConn(f.conn, m.Payload); err != nil {
		return nil, fmt.Errorf("%v: reading the reply: %w", req, err)
	}
	return m, nil
}

func readFullConn(c *net.UnixConn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (f *Frontend) getU64(req Request) (uint64, error) {
	p, err := f.call(req, nil)
	if err != nil {
		return 0, err
	}
	return (&Message{Request: req, Payload: p}).u64()
}

// send sends a request without a reply of its own; with REPLY_ACK it
// waits for the back end's verdict. fds stay the caller's.
func (f *Frontend) send(req Request, payload []byte, fds ...int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	flags := uint32(flagVersion)
	ack := f.protoFeatures&(1<<ProtocolReplyAck) != 0
	if ack {
		flags |= flagNeedReply
	}
	if err := writeMessage(f.conn, &Message{Request: req, Flags: flags, Payload: payload, Fds: fds}); err != nil {
		return err
	}
	if !ack {
		return nil
	}
	r, err := f.reply(req)
	if err != nil {
		return err
	}
	if v, err := r.u64(); err != nil || v != 0 {
		return fmt.Errorf("%v: the back end refused it", req)
	}
	return nil
}

// DeviceFeatures is what the device offers (virtio feature bits).
func (f *Frontend) DeviceFeatures() (uint64, error) {
	v, err := f.getU64(GetFeatures)
	return v &^ (1 << FeatureProtocolFeatures), err
}

// SetFeatures accepts features and hands the back end the guest memory.
func (f *Frontend) SetFeatures(features uint64) error {
	if err := f.send(SetFeatures, u64Payload(features|1<<FeatureProtocolFeatures)); err != nil {
		return err
	}
	regs := f.mem.Regions()
	if len(regs) > maxRegions {
		return fmt.Errorf("guest memory has %d regions, vhost-user carries %d", len(regs), maxRegions)
	}
	table := make([]MemRegion, len(regs))
	fds := make([]int, len(regs))
	for i, r := range regs {
		table[i] = MemRegion{GPA: r.GPA, Size: r.Size, UserAddr: r.UserAddr, MmapOffset: r.MmapOffset}
		fds[i] = f.mem.Fd(i)
	}
	return f.send(SetMemTable, encodeMemTable(table), fds...)
}

// blkConfigSize is struct virtio_blk_config as QEMU 7.2 knows it, the most
// qemu-storage-daemon's GET_CONFIG answers.
const blkConfigSize = 60

// Config reads the device's configuration space.
func (f *Frontend) Config() ([]byte, error) {
	p, err := f.call(GetConfig, ConfigSpace{Data: make([]byte, blkConfigSize)}.encode())
	if err != nil {
		return nil, err
	}
	c, err := (&Message{Request: GetConfig, Payload: p}).config()
	if err != nil {
		return nil, err
	}
	if len(c.Data) != blkConfigSize {
		return nil, errors.New("GET_CONFIG: the back end failed it")
	}
	return c.Data, nil
}

// MaxQueueSize is the largest queue q may have; 0: no such queue.
func (f *Frontend) MaxQueueSize(q int) int {
	if q < 0 || q >= f.numQueues {
		return 0
	}
	return 1024 // libvhost-user's VIRTQUEUE_MAX_SIZE
}

// SetupQueue records queue q's rings (guest-physical addresses).
func (f *Frontend) SetupQueue(q int, size uint16, desc, avail, used uint64) error {
	if q < 0 || q >= f.numQueues {
		return fmt.Errorf("vhost-user: no queue %d (the back end has %d)", q, f.numQueues)
	}
	f.queues[q] = &feQueue{size: size, desc: desc, avail: avail, used: used, kick: -1}
	return nil
}

func (f *Frontend) userAddr(gpa uint64) (uint64, error) {
	for _, r := range f.mem.Regions() {
		if gpa >= r.GPA && gpa-r.GPA < r.Size {
			return r.UserAddr + (gpa - r.GPA), nil
		}
	}
	return 0, &guestmem.AddrError{GPA: gpa, Len: 1}
}

// InflightFd is the inflight file Start got or was given (owned by f until
// Close); -1 without inflight tracking.
func (f *Frontend) InflightFd() int { return f.inflightFd }

// setupInflight gets the back end's inflight file once, and hands it
// over (again) before the queues start.
func (f *Frontend) setupInflight() error {
	n, size := 0, uint16(0)
	for i, q := range f.queues {
		if q != nil {
			n, size = i+1, q.size
		}
	}
	if n == 0 {
		return nil
	}
	info := Inflight{NumQueues: uint16(n), QueueSize: size}
	if f.inflightFd < 0 {
		p, fds, err := f.callFds(GetInflightFd, info.encode())
		if err != nil {
			return err
		}
		if len(fds) != 1 {
			closeFds(fds)
			return fmt.Errorf("GET_INFLIGHT_FD: %d fds in the reply", len(fds))
		}
		f.inflightFd = fds[0]
		got, err := (&Message{Request: GetInflightFd, Payload: p}).inflight()
		if err != nil {
			return err
		}
		info = got
	} else {
		var st unix.Stat_t
		if err := unix.Fstat(f.inflightFd, &st); err != nil {
			return err
		}
		info.MmapSize = uint64(st.Size)
	}
	return f.send(SetInflightFd, info.encode(), f.inflightFd)
}

// callFds is call for a reply that carries fds.
func (f *Frontend) callFds(req Request, payload []byte) ([]byte, []int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := writeMessage(f.conn, &Message{Request: req, Flags: flagVersion, Payload: payload}); err != nil {
		return nil, nil, err
	}
	f.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer f.conn.SetReadDeadline(time.Time{})
	var hdr [headerSize]byte
	oob := make([]byte, unix.CmsgSpace(4*maxFds))
	n, oobn, _, _, err := f.conn.ReadMsgUnix(hdr[:], oob)
	if err != nil {
		return nil, nil, fmt.Errorf("%v: reading the reply: %w", req, err)
	}
	var fds []int
	if cmsgs, err := unix.ParseSocketControlMessage(oob[:oobn]); err == nil {
		for _, c := range cmsgs {
			if rights, err := unix.ParseUnixRights(&c); err == nil {
				fds = append(fds, rights...)
			}
		}
	}
	if _, err := readFullConn(f.conn, hdr[n:]); err != nil {
		closeFds(fds)
		return nil, nil, fmt.Errorf("%v: reading the reply: %w", req, err)
	}
	le := binary.LittleEndian
	size := le.Uint32(hdr[8:])
	if Request(le.Uint32(hdr[:])) != req || le.Uint32(hdr[4:])&flagReply == 0 || size > maxPayload {
		closeFds(fds)
		return nil, nil, fmt.Errorf("%v: the back end answered %v", req, Request(le.Uint32(hdr[:])))
	}
	p := make([]byte, size)
	if _, err := readFullConn(f.conn, p); err != nil {
		closeFds(fds)
		return nil, nil, fmt.Errorf("%v: reading the reply: %w", req, err)
	}
	return p, fds, nil
}

// Start hands the back end every queue set up, with its eventfds, and
// enables them: the device serves them from now on.
func (f *Frontend) Start() error {
	if f.wantInflight {
		if err := f.setupInflight(); err != nil {
			return fmt.Errorf("inflight tracking: %w", err)
		}
	}
	for i, q := range f.queues {
		if q == nil {
			continue
		}
		if err := f.startQueue(i, q); err != nil {
			return fmt.Errorf("queue %d: %w", i, err)
		}
	}
	return nil
}

func (f *Frontend) startQueue(i int, q *feQueue) error {
	var ua [3]uint64
	for j, gpa := range []uint64{q.desc, q.avail, q.used} {
		a, err := f.userAddr(gpa)
		if err != nil {
			return err
		}
		ua[j] = a
	}
	idx := uint32(i)
	if err := f.send(SetVringNum, VringState{idx, uint32(q.size)}.encode()); err != nil {
		return err
	}
	if err := f.send(SetVringBase, VringState{idx, 0}.encode()); err != nil {
		return err
	}
	if err := f.send(SetVringAddr, VringAddr{Index: idx, Desc: ua[0], Used: ua[2], Avail: ua[1]}.encode()); err != nil {
		return err
	}
	kick, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return err
	}
	q.kick = kick
	call, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return err
	}
	q.call = os.NewFile(uintptr(call), "vhost-user call")
	q.irq, q.done = make(chan struct{}, 1), make(chan struct{})
	go func() {
		defer close(q.done)
		var b [8]byte
		for {
			if _, err := q.call.Read(b[:]); err != nil {
				return
			}
			select {
			case q.irq <- struct{}{}:
			default:
			}
		}
	}()
	if err := f.send(SetVringKick, u64Payload(uint64(i)), q.kick); err != nil {
		return err
	}
	if err := f.send(SetVringCall, u64Payload(uint64(i)), call); err != nil {
		return err
	}
	return f.send(SetVringEnable, VringState{idx, 1}.encode())
}

// Kick notifies the device that queue q has new buffers.
func (f *Frontend) Kick(q int) {
	if fq := f.queues[q]; fq != nil && fq.kick >= 0 {
		signal(fq.kick)
	}
}

// Interrupt delivers the device's used-buffer notifications for queue q;
// several may arrive as one.
func (f *Frontend) Interrupt(q int) <-chan struct{} {
	if fq := f.queues[q]; fq != nil {
		return fq.irq
	}
	return nil
}

// Reset stops every queue (GET_VRING_BASE: the back end completes what it
// took) and drops the eventfds; the connection stays for a new start.
func (f *Frontend) Reset() error {
	var first error
	for i, q := range f.queues {
		if q == nil {
			continue
		}
		if q.kick >= 0 {
			if _, err := f.call(GetVringBase, VringState{uint32(i), 0}.encode()); err != nil && first == nil {
				first = err
			}
		}
		q.release()
		f.queues[i] = nil
	}
	return first
}

func (q *feQueue) release() {
	if q.kick >= 0 {
		unix.Close(q.kick)
		q.kick = -1
	}
	if q.call != nil {
		q.call.Close()
		<-q.done
		q.call = nil
	}
}

// Close resets the device and disconnects; the memory stays the caller's.
func (f *Frontend) Close() error {
	err := f.Reset()
	if cerr := f.conn.Close(); err == nil {
		err = cerr
	}
	if f.inflightFd >= 0 {
		unix.Close(f.inflightFd)
		f.inflightFd = -1
	}
	return err
}
