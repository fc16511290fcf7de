package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"

	"golang.org/x/sys/unix"
)

// readMessage reads one message and the fds sent with it. The fds are the
// caller's (in the message) whether or not an error is returned with it;
// on an error without a message there are none left open.
func readMessage(c *net.UnixConn) (*Message, error) {
	var hdr [headerSize]byte
	oob := make([]byte, unix.CmsgSpace(4*maxFds))
	// The fds travel with the first byte of the header: QEMU sends each
	// message with one sendmsg.
	n, oobn, flags, _, err := c.ReadMsgUnix(hdr[:], oob)
	n, oobn = max(n, 0), max(oobn, 0)
	fds, ferr := parseFds(oob[:oobn])
	m := &Message{Fds: fds}
	if n == 0 && err != nil {
		closeFds(fds)
		return nil, err
	}
	if ferr == nil && flags&unix.MSG_CTRUNC != 0 {
		ferr = protoErr("more than %d fds with one message", maxFds)
	}
	if ferr != nil {
		closeFds(fds)
		return nil, ferr
	}
	if n < headerSize {
		if _, err := io.ReadFull(c, hdr[n:]); err != nil {
			closeFds(fds)
			return nil, fmt.Errorf("%w: message header cut short: %w", ErrProtocol, err)
		}
	}
	req, fl, size, err := decodeHeader(hdr[:])
	m.Request, m.Flags = req, fl
	if err != nil {
		closeFds(fds)
		return nil, err
	}
	m.Payload = make([]byte, size)
	if _, err := io.ReadFull(c, m.Payload); err != nil {
		closeFds(fds)
		return nil, fmt.Errorf("%w: %v payload cut short: %w", ErrProtocol, req, err)
	}
	return m, nil
}

// parseFds collects the fds of every SCM_RIGHTS message in oob; it keeps
// (for the caller to close) the fds of well-formed messages even when a
// later one is malformed.
func parseFds(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, protoErr("control message: %v", err)
	}
	var fds []int
	for _, cm := range cmsgs {
		if cm.Header.Level != unix.SOL_SOCKET || cm.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&cm)
		if err != nil {
			return fds, protoErr("SCM_RIGHTS: %v", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeFds(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// writeMessage sends m with its fds (which stay the caller's).
func writeMessage(c *net.UnixConn, m *Message) error {
	var oob []byte
	if len(m.Fds) > 0 {
		oob = unix.UnixRights(m.Fds...)
	}
	b := m.encode()
	n, _, err := c.WriteMsgUnix(b, oob, nil)
	if err == nil && n != len(b) {
		err = errors.New("short write")
	}
	if err != nil {
		return fmt.Errorf("send %v: %w", m.Request, err)
	}
	return nil
}
