package vhostuser

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"minivmm/vm/virtq"
)

// Inflight is the payload of GET/SET_INFLIGHT_FD: where in the fd the
// inflight region lies, and the queues it covers.
type Inflight struct {
	MmapSize, MmapOffset uint64
	NumQueues, QueueSize uint16
}

// inflightPayload is sizeof(VhostUserInflight): two u64 and two u16,
// padded to 8 bytes (QEMU refuses a reply of any other size).
const inflightPayload = 24

func (m *Message) inflight() (Inflight, error) {
	if len(m.Payload) < inflightPayload-4 { // the padding may be left off
		return Inflight{}, protoErr("%v: payload of %d bytes, want %d", m.Request, len(m.Payload), inflightPayload)
	}
	le := binary.LittleEndian
	p := m.Payload
	return Inflight{le.Uint64(p), le.Uint64(p[8:]), le.Uint16(p[16:]), le.Uint16(p[18:])}, nil
}

func (f Inflight) encode() []byte {
	le := binary.LittleEndian
	b := le.AppendUint64(nil, f.MmapSize)
	b = le.AppendUint64(b, f.MmapOffset)
	b = le.AppendUint16(b, f.NumQueues)
	b = le.AppendUint16(b, f.QueueSize)
	return append(b, 0, 0, 0, 0)
}

// inflightMap is the inflight file the front end handed over, mapped
// (its fd is closed once mapped: the mapping is all the session keeps).
type inflightMap struct {
	mem       []byte
	numQueues int
	queueSize uint16
}

// region is queue i's part, or nil if the file does not cover it.
func (m *inflightMap) region(i int) []byte {
	if m == nil || i >= m.numQueues {
		return nil
	}
	rs := virtq.InflightRegionSize(m.queueSize)
	return m.mem[i*rs : (i+1)*rs]
}

func (m *inflightMap) unmap() {
	if m != nil {
		unix.Munmap(m.mem)
	}
}

func (s *session) checkInflightShape(m *Message, f Inflight) error {
	if f.NumQueues == 0 || int(f.NumQueues) > len(s.vrings) {
		return protoErr("%v: %d queues, the device has %d", m.Request, f.NumQueues, len(s.vrings))
	}
	if f.QueueSize == 0 || f.QueueSize > virtq.MaxSize || f.QueueSize&(f.QueueSize-1) != 0 {
		return protoErr("%v: queue size %d is not a power of 2 up to %d", m.Request, f.QueueSize, virtq.MaxSize)
	}
	return nil
}

// getInflightFd makes a zeroed inflight file for the queues the front end
// names and hands it over; the front end keeps it across reconnections
// and gives it back with SET_INFLIGHT_FD.
func (s *session) getInflightFd(m *Message) (*Message, error) {
	f, err := m.inflight()
	if err != nil {
		return nil, err
	}
	if err := s.checkInflightShape(m, f); err != nil {
		return nil, err
	}
	size := int64(f.NumQueues) * int64(virtq.InflightRegionSize(f.QueueSize))
	fd, err := unix.MemfdCreate("vhost-user-inflight", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("GET_INFLIGHT_FD: %w", err)
	}
	if err := unix.Ftruncate(fd, size); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("GET_INFLIGHT_FD: %w", err)
	}
	// Sealed at its size, so that no one can shrink it under a
	// mapping (a SIGBUS).
	unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_SEAL)
	f.MmapSize, f.MmapOffset = uint64(size), 0
	r := replyTo(m, f.encode())
	r.Fds = []int{fd} // closed once sent
	return r, nil
}

// setInflightFd maps the inflight file: the queues started from now on
// record what they take in it, and first resubmit what a previous back
// end left in flight there.
func (s *session) setInflightFd(m *Message) error {
	f, err := m.inflight()
	if err != nil {
		return err
	}
	if len(m.Fds) != 1 {
		return protoErr("%v: %d fds, want 1", m.Request, len(m.Fds))
	}
	if err := s.checkInflightShape(m, f); err != nil {
		return err
	}
	for _, v := range s.vrings {
		if v.q != nil {
			return protoErr("%v: queue %d is running", m.Request, v.index)
		}
	}
	need := uint64(f.NumQueues) * uint64(virtq.InflightRegionSize(f.QueueSize))
	if f.MmapSize < need || f.MmapSize > 1<<30 || f.MmapOffset%uint64(unix.Getpagesize()) != 0 {
		return protoErr("%v: %d bytes at offset %d for %d queues of %d (%d bytes)", m.Request, f.MmapSize, f.MmapOffset, f.NumQueues, f.QueueSize, need)
	}
	fd := m.Fds[0] // closed after the handler
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return protoErr("%v: fstat: %v", m.Request, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || uint64(st.Size) < f.MmapOffset+f.MmapSize {
		return protoErr("%v: the file (%d bytes) does not hold %d bytes at offset %d", m.Request, st.Size, f.MmapSize, f.MmapOffset)
	}
	mem, err := unix.Mmap(fd, int64(f.MmapOffset), int(f.MmapSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("SET_INFLIGHT_FD: mmap: %w", err)
	}
	s.inflight.unmap()
	s.inflight = &inflightMap{mem: mem, numQueues: int(f.NumQueues), queueSize: f.QueueSize}
	return nil
}
