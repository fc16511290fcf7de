package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"

	"minivmm/vm/guestmem"
)

// session is one front end's connection: the state it set up, and every
// fd it sent that is still held.
type session struct {
	conn *net.UnixConn
	dev  Device

	features      uint64 // acked with SET_FEATURES
	protoFeatures uint64 // acked with SET_PROTOCOL_FEATURES
	mem           *guestmem.Memory
	vrings        []*vring
	inflight      *inflightMap // SET_INFLIGHT_FD's, or nil
}

// protocolFeatures are the protocol features the back end offers.
const protocolFeatures = 1<<ProtocolMQ | 1<<ProtocolReplyAck | 1<<ProtocolConfig | 1<<ProtocolResetDevice | 1<<ProtocolInflightShmfd

func newSession(c *net.UnixConn, dev Device) *session {
	s := &session{conn: c, dev: dev}
	for i := range dev.NumQueues() {
		s.vrings = append(s.vrings, newVring(i))
	}
	return s
}

// serve handles messages until the front end disconnects or breaks the
// protocol, then releases everything the session holds. It returns the
// error that ended it (nil for a disconnect between messages).
func (s *session) serve() error {
	defer s.release()
	for {
		m, err := readMessage(s.conn)
		if err != nil {
			if m == nil && isEOF(err) {
				return nil
			}
			return err
		}
		reply, herr := s.handle(m)
		closeFds(m.Fds) // the fds no handler took
		if herr == nil && reply != nil {
			herr = writeMessage(s.conn, reply)
			closeFds(reply.Fds)
		} else if m.Flags&flagNeedReply != 0 && s.protoFeatures&(1<<ProtocolReplyAck) != 0 {
			ack := uint64(0)
			if herr != nil {
				ack = 1
			}
			if werr := writeMessage(s.conn, &Message{Request: m.Request, Flags: flagVersion | flagReply, Payload: u64Payload(ack)}); herr == nil {
				herr = werr
			}
		}
		if herr != nil {
			return herr
		}
	}
}

func isEOF(err error) bool {
	var op *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.As(err, &op) && errors.Is(op.Err, syscall.ECONNRESET)
}

// resetVrings stops every queue, closes their fds and resets the device.
func (s *session) resetVrings() {
	s.halt(s.vrings...)
	for i, v := range s.vrings {
		v.release()
		s.vrings[i] = newVring(i)
	}
	s.dev.Reset()
}

// halt stops the queues of vs that run, keeping their kick fds and next
// available indexes. The device stops first: a queue's kick handler may
// be serving a driver that never lets it finish (a ring its own requests
// keep refilling), and only the device's Stop ends that; the queues not
// in vs then resume, each with a kick, since what they left in the ring
// brings none of its own.
func (s *session) halt(vs ...*vring) {
	if !slices.ContainsFunc(vs, func(v *vring) bool { return v.q != nil }) {
		return
	}
	s.dev.Stop()
	for _, v := range vs {
		v.stop()
	}
	s.dev.Start()
	for _, v := range s.vrings {
		if v.q != nil {
			v.selfKick()
		}
	}
}

// release stops every queue and closes everything the front end sent.
func (s *session) release() {
	s.resetVrings()
	if s.mem != nil {
		s.mem.Close()
		s.mem = nil
	}
	s.inflight.unmap()
	s.inflight = nil
}

func replyTo(m *Message, payload []byte) *Message {
	return &Message{Request: m.Request, Flags: flagVersion | flagReply, Payload: payload}
}

// take removes fd i from m, so that it is not closed after the handler.
func take(m *Message, i int) int {
	fd := m.Fds[i]
	m.Fds[i] = -1
	return fd
}

func (s *session) vring(m *Message, i uint32) (*vring, error) {
	if int(i) >= len(s.vrings) {
		return nil, protoErr("%v: queue %d of %d", m.Request, i, len(s.vrings))
	}
	return s.vrings[i], nil
}

// stateVring decodes m's VringState and finds the ring it names.
func (s *session) stateVring(m *Message) (VringState, *vring, error) {
	st, err := m.vringState()
	if err != nil {
		return st, nil, err
	}
	v, err := s.vring(m, st.Index)
	return st, v, err
}

// handle runs one message and returns its reply, if it has one of its own.
func (s *session) handle(m *Message) (*Message, error) {
	switch m.Request {
	case GetFeatures:
		return replyTo(m, u64Payload(s.dev.Features()|1<<FeatureProtocolFeatures)), nil
	case SetFeatures:
		f, err := m.u64()
		if err != nil {
			return nil, err
		}
		if extra := f &^ (s.dev.Features() | 1<<FeatureProtocolFeatures); extra != 0 {
			return nil, protoErr("SET_FEATURES: features 0x%x were not offered", extra)
		}
		s.features = f
		return nil, s.dev.Ack(f &^ (1 << FeatureProtocolFeatures))
	case GetProtocolFeatures:
		return replyTo(m, u64Payload(protocolFeatures)), nil
	case SetProtocolFeatures:
		f, err := m.u64()
		if err != nil {
			return nil, err
		}
		if extra := f &^ protocolFeatures; extra != 0 {
			return nil, protoErr("SET_PROTOCOL_FEATURES: features 0x%x were not offered", extra)
		}
		s.protoFeatures = f
		return nil, nil
	case SetOwner:
		// One front end per connection: ownership is the connection.
		return nil, nil
	case ResetOwner, ResetDevice:
		s.resetVrings()
		return nil, nil
	case GetQueueNum:
		return replyTo(m, u64Payload(uint64(len(s.vrings)))), nil
	case SetMemTable:
		return nil, s.setMemTable(m)
	case SetVringNum:
		st, v, err := s.stateVring(m)
		if err != nil {
			return nil, err
		}
		if st.Num == 0 || st.Num > 32768 || st.Num&(st.Num-1) != 0 {
			return nil, protoErr("SET_VRING_NUM: queue %d size %d is not a power of 2 up to 32768", st.Index, st.Num)
		}
		if v.q != nil {
			return nil, protoErr("SET_VRING_NUM: queue %d is running", st.Index)
		}
		v.num = st.Num
		return nil, nil
	case SetVringBase:
		st, v, err := s.stateVring(m)
		if err != nil {
			return nil, err
		}
		if v.q != nil {
			return nil, protoErr("SET_VRING_BASE: queue %d is running", st.Index)
		}
		v.base = uint16(st.Num)
		return nil, nil
	case SetVringAddr:
		a, err := m.vringAddr()
		if err != nil {
			return nil, err
		}
		v, err := s.vring(m, a.Index)
		if err != nil {
			return nil, err
		}
		if v.q != nil {
			return nil, protoErr("SET_VRING_ADDR: queue %d is running", a.Index)
		}
		v.addr = &a
		return nil, nil
	case GetVringBase:
		st, v, err := s.stateVring(m)
		if err != nil {
			return nil, err
		}
		// The ring stops here, its requests in flight completed, and
		// it forgets its eventfds (libvhost-user does the same); a
		// restart sends them again.
		s.halt(v)
		v.dropKick()
		v.setCall(-1)
		return replyTo(m, VringState{st.Index, uint32(v.base)}.encode()), nil
	case SetVringKick, SetVringCall, SetVringErr:
		i, fd, err := m.vringFd()
		if err != nil {
			return nil, err
		}
		v, err := s.vring(m, i)
		if err != nil {
			return nil, err
		}
		if fd >= 0 {
			fd = take(m, 0)
		}
		if m.Request == SetVringKick {
			s.halt(v) // the kick fd is the queue's: it is replaced stopped
		}
		switch m.Request {
		case SetVringCall:
			v.setCall(fd)
		case SetVringErr:
			v.setErr(fd)
		default:
			if fd < 0 {
				return nil, protoErr("SET_VRING_KICK: polling (no fd) is not supported")
			}
			if err := v.setKick(fd); err != nil {
				return nil, fmt.Errorf("SET_VRING_KICK: %w", err)
			}
			// Without protocol features a ring is enabled once kicked.
			if s.features&(1<<FeatureProtocolFeatures) == 0 {
				v.enabled = true
			}
			return nil, s.start(v)
		}
		return nil, nil
	case SetVringEnable:
		st, v, err := s.stateVring(m)
		if err != nil {
			return nil, err
		}
		if st.Num > 1 {
			return nil, protoErr("SET_VRING_ENABLE: %d", st.Num)
		}
		v.enabled = st.Num == 1
		if !v.enabled {
			// Keep the kick fd: enabling again resumes.
			s.halt(v)
			return nil, nil
		}
		return nil, s.start(v)
	case GetConfig:
		c, err := m.config()
		if err != nil {
			return nil, err
		}
		cfg := s.dev.Config()
		if uint64(c.Offset)+uint64(len(c.Data)) > uint64(len(cfg)) {
			// A failed GET_CONFIG is answered with no config data.
			return replyTo(m, ConfigSpace{Offset: c.Offset, Flags: c.Flags}.encode()), nil
		}
		c.Data = append([]byte(nil), cfg[c.Offset:int(c.Offset)+len(c.Data)]...)
		return replyTo(m, c.encode()), nil
	case GetInflightFd:
		return s.getInflightFd(m)
	case SetInflightFd:
		return nil, s.setInflightFd(m)
	case SetConfig:
		c, err := m.config()
		if err != nil {
			return nil, err
		}
		return nil, s.dev.SetConfig(c.Offset, c.Data)
	}
	return nil, protoErr("%v is not supported", m.Request)
}

// setMemTable maps the front end's memory, replacing the previous map;
// running queues stop for the swap and resume on the new map.
func (s *session) setMemTable(m *Message) error {
	regs, err := m.memTable()
	if err != nil {
		return err
	}
	specs := make([]guestmem.RegionSpec, len(regs))
	for i, r := range regs {
		specs[i] = guestmem.RegionSpec{Fd: take(m, i), GPA: r.GPA, Size: r.Size, UserAddr: r.UserAddr, MmapOffset: r.MmapOffset}
	}
	if err := checkRegionFiles(specs); err != nil {
		for _, sp := range specs {
			closeFd(sp.Fd)
		}
		return err
	}
	mem, err := guestmem.Map(specs) // owns the fds from here, on error too
	if err != nil {
		return fmt.Errorf("SET_MEM_TABLE: %w", err)
	}
	var running []*vring
	for _, v := range s.vrings {
		if v.q != nil {
			running = append(running, v)
		}
	}
	s.halt(running...)
	if s.mem != nil {
		s.mem.Close()
	}
	s.mem = mem
	for _, v := range running {
		if err := s.start(v); err != nil {
			return err
		}
	}
	return nil
}

// start runs v's queue if everything it needs is there: memory, size,
// addresses, a kick fd and (with protocol features) enabled.
func (s *session) start(v *vring) error {
	if v.q != nil || !v.enabled || v.kick == nil || s.mem == nil || v.addr == nil || v.num == 0 {
		return nil
	}
	var gpa [3]uint64
	for i, ua := range []uint64{v.addr.Desc, v.addr.Avail, v.addr.Used} {
		g, err := s.mem.UserToGPA(ua)
		if err != nil {
			return fmt.Errorf("queue %d: %w", v.index, err)
		}
		gpa[i] = g
	}
	infl := s.inflight.region(v.index)
	if infl != nil && uint32(s.inflight.queueSize) != v.num {
		return protoErr("queue %d: size %d, the inflight region's is %d", v.index, v.num, s.inflight.queueSize)
	}
	q, err := s.dev.StartQueue(QueueConfig{
		Index: v.index, Mem: s.mem, Size: uint16(v.num), Desc: gpa[0], Avail: gpa[1], Used: gpa[2],
		Base: v.base, Features: s.features, Notify: v.notify, Fail: v.fail, Inflight: infl,
	})
	if err != nil {
		return fmt.Errorf("queue %d: %w", v.index, err)
	}
	v.q = q
	v.kickDone = make(chan struct{})
	go readKicks(v.kick, q, v.kickDone)
	// Requests made available before the kick fd arrived are served
	// without waiting for another kick; by the kick reader, not here,
	// where a driver that keeps the queue busy would hold the session.
	v.selfKick()
	return nil
}

// checkRegionFiles refuses regions that reach past the end of their file:
// the mapping would succeed, and the first access past the end would
// kill the process with SIGBUS (found by FuzzSession). A front end that
// shrinks its file afterwards can still do that; QEMU seals its memfds
// against shrinking (memory-backend-memfd's seal=on, the default).
func checkRegionFiles(specs []guestmem.RegionSpec) error {
	for i, sp := range specs {
		var st unix.Stat_t
		if err := unix.Fstat(sp.Fd, &st); err != nil {
			return protoErr("SET_MEM_TABLE: region %d: fstat: %v", i, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			continue // a device's memory has no size to check
		}
		if end := sp.MmapOffset + sp.Size; end < sp.Size || end > uint64(st.Size) {
			return protoErr("SET_MEM_TABLE: region %d (offset 0x%x, size 0x%x) reaches past the end of its file (0x%x bytes)",
				i, sp.MmapOffset, sp.Size, st.Size)
		}
	}
	return nil
}

func closeFd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}
