package monitor

import (
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/internal/jsonval"
	"minivmm/qemuopen"
)

// maxFdsPerRead sizes the ancillary buffer: fds beyond it in one message
// are discarded (closed) by the kernel, which is what we would do anyway.
const maxFdsPerRead = 16

// conn is one client of a monitor. Its commands run one at a time, in
// order, on its own goroutine; events may be written from others.
type conn struct {
	mon   *Monitor
	uc    *net.UnixConn
	owner qemuopen.Owner

	negotiated atomic.Bool

	writeMu sync.Mutex
	broken  bool // a write failed; nothing more is sent

	// pendingFd arrived with a message that is still being received; the
	// message takes it when it completes. -1: none.
	pendingFd int
}

func (s *Server) newConn(m *Monitor, uc *net.UnixConn) *conn {
	c := &conn{mon: m, uc: uc, owner: s.fds.NewOwner(), pendingFd: -1}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

func (c *conn) serve() {
	s := c.mon.srv
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.uc.Close()
		c.dropPendingFd()
		s.fds.OwnerGone(c.owner)
	}()
	c.send(Obj{{"QMP", Obj{{"version", Version}, {"capabilities", []any{}}}}})

	framer := NewFramer(maxMessageSize, maxNesting)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(maxFdsPerRead*4))
	for {
		n, oobn, _, _, err := c.uc.ReadMsgUnix(buf, oob)
		n, oobn = max(n, 0), max(oobn, 0)
		fds := receivedFds(oob[:oobn])
		frames := framer.Feed(buf[:n])
		c.dispatchChunk(frames, fds, framer.Pending())
		if err != nil || n == 0 {
			return
		}
	}
}

// dispatchChunk runs the messages completed by one read. Fds belong to
// the command their sendmsg carried. The kernel ends a read with the data
// that came with fds, so the fds of this read go to the message still in
// progress at its end, or else to the last message it completed; an fd
// carried over from an earlier read goes to the message it arrived within,
// which is the first one completed now. A command takes at most one fd;
// every other fd is closed at once.
func (c *conn) dispatchChunk(frames []Frame, fds []int, pending bool) {
	newFd := -1
	if len(fds) > 0 {
		newFd = fds[0]
		closeFds(fds[1:])
	}
	carried := c.pendingFd
	c.pendingFd = -1
	if len(frames) == 0 {
		switch {
		case pending && carried >= 0:
			c.pendingFd = carried
			closeFd(newFd)
		case pending:
			c.pendingFd = newFd
		default:
			closeFd(carried)
			closeFd(newFd)
		}
		return
	}
	if pending {
		c.pendingFd = newFd
		newFd = -1
	}
	for i, fr := range frames {
		fd := -1
		if i == 0 {
			fd = carried
		}
		if i == len(frames)-1 && newFd >= 0 {
			if fd >= 0 {
				closeFd(newFd)
			} else {
				fd = newFd
			}
		}
		c.handle(fr, fd)
	}
}

func closeFd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

func (c *conn) dropPendingFd() {
	closeFd(c.pendingFd)
	c.pendingFd = -1
}

func receivedFds(oob []byte) []int {
	if len(oob) == 0 {
		return nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		if got, err := unix.ParseUnixRights(&msgs[i]); err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// handle runs one framed message and writes its reply. fd (or -1) is the
// descriptor that came with it; it is closed unless the command keeps it.
func (c *conn) handle(fr Frame, fd int) {
	call := &call{conn: c, fd: fd}
	var reply Obj
	if fr.Err != nil {
		reply = errorReply(genericError("%s", fr.Err.Error()), nil)
	} else {
		reply = c.execute(call, fr.Data)
	}
	// Closed before replying, so a client that sees the reply can count on
	// the VMM no longer holding the fd.
	closeFd(call.fd)
	c.send(reply)
	if call.afterReply != nil {
		call.afterReply()
	}
}

// execute checks a message as QEMU's qmp_dispatch does, in its order, and
// runs the command.
func (c *conn) execute(call *call, data []byte) Obj {
	v, err := jsonval.Decode(data)
	if err != nil {
		return errorReply(genericError("JSON parse error, %s", err.Error()), nil)
	}
	msg, ok := v.(map[string]any)
	if !ok {
		return errorReply(genericError("QMP input must be a JSON object"), nil)
	}
	id, hasID := msg["id"]
	var idp *any
	if hasID {
		idp = &id
	}
	// exec-oob is unexpected too: the greeting offers no oob capability.
	for _, key := range slices.Sorted(maps.Keys(msg)) {
		if key != "execute" && key != "arguments" && key != "id" {
			return errorReply(genericError("QMP input member '%s' is unexpected", key), idp)
		}
	}
	execute, present := msg["execute"]
	if !present {
		return errorReply(genericError("QMP input lacks member 'execute'"), idp)
	}
	name, ok := execute.(string)
	if !ok {
		return errorReply(genericError("QMP input member 'execute' must be a string"), idp)
	}
	rawArgs := map[string]any{}
	if a, present := msg["arguments"]; present {
		if rawArgs, ok = a.(map[string]any); !ok {
			return errorReply(genericError("QMP input member 'arguments' must be an object"), idp)
		}
	}
	cmd, found := commands[name]
	if !c.negotiated.Load() && name != "qmp_capabilities" {
		return errorReply(&Error{Class: CommandNotFound, Desc: "Expecting capabilities negotiation with 'qmp_capabilities'"}, idp)
	}
	if !found {
		return errorReply(&Error{Class: CommandNotFound, Desc: "The command " + name + " has not been found"}, idp)
	}
	args := Args(rawArgs)
	if !cmd.raw {
		var err error
		if args, err = checkArgs(cmd.params, rawArgs); err != nil {
			return errorReply(err, idp)
		}
	}
	ret, err := cmd.run(call, args)
	if err != nil {
		return errorReply(err, idp)
	}
	if ret == nil {
		ret = Obj{}
	}
	reply := Obj{{"return", ret}}
	if idp != nil {
		reply = append(reply, Member{"id", *idp})
	}
	return reply
}

func errorReply(err error, id *any) Obj {
	e, ok := err.(*Error)
	if !ok {
		e = &Error{Class: GenericError, Desc: err.Error()}
	}
	// QEMU puts the id first in errors and last in returns.
	reply := Obj{}
	if id != nil {
		reply = append(reply, Member{"id", *id})
	}
	return append(reply, Member{"error", Obj{{"class", e.Class}, {"desc", e.Desc}}})
}

// send writes one message, CRLF-terminated as QEMU's monitor does. A client
// that stops reading for writeTimeout is disconnected.
func (c *conn) send(msg Obj) {
	var b strings.Builder
	encode(&b, msg, c.mon.pretty, 0)
	b.WriteString("\r\n")
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.broken {
		return
	}
	c.uc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := c.uc.Write([]byte(b.String())); err != nil {
		c.broken = true
		c.uc.Close()
	}
}
