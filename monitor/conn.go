package monitor

import (
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"minivmm/internal/jsonval"
	"minivmm/qemuopen"
)

// maxFdsPerRead sizes the ancillary buffer: fds beyond it in one message
// are discarded (closed) by the kernel, which is what we would do anyway.
const maxFdsPerRead = 16

// inbandQueueLen is how many in-band requests a connection with oob
// enabled may have waiting (QEMU's QMP_REQ_QUEUE_LEN_MAX); past it the
// connection is not read until one completes, as QEMU suspends it.
const inbandQueueLen = 8

// conn is one client of a monitor. Three goroutines serve it: the reader
// frames input and runs commands (in-band ones itself until the client
// enables oob, then on the in-band worker, so that exec-oob is answered
// while in-band work runs); the writer sends replies and events from a
// bounded queue, so that nothing else ever waits on a slow client.
type conn struct {
	mon   *Monitor
	uc    *net.UnixConn
	owner qemuopen.Owner

	negotiated atomic.Bool
	oob        atomic.Bool // the client enabled the oob capability
	closing    atomic.Bool // the server is closing: run nothing more

	// held is the batch of fds that came with the latest sendmsg that
	// carried any (see heldfds.go). Only the reader touches the pointer.
	held *heldFds

	inband     chan *request // to the in-band worker; nil until oob is enabled
	workerDone chan struct{}

	out    chan outMsg   // to the writer (events.go)
	dead   chan struct{} // closed by kill: drop everything, stop working
	finish chan struct{} // closed when reader and worker are done: flush, stop
	wdone  chan struct{} // closed when the writer has stopped
	once   sync.Once
}

// request is one framed message, decoded, on its way to be run.
type request struct {
	msg map[string]any // nil when err is set
	err error          // a framing or JSON error to answer instead
	fds *heldFds       // the fds held when the message was read
}

func (s *Server) newConn(m *Monitor, uc *net.UnixConn) *conn {
	c := &conn{
		mon: m, uc: uc, owner: s.fds.NewOwner(),
		out:  make(chan outMsg, outQueueLen),
		dead: make(chan struct{}), finish: make(chan struct{}), wdone: make(chan struct{}),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return c
}

// kill drops the connection: the socket is closed, queued work and
// output are discarded. Safe from any goroutine, any number of times.
func (c *conn) kill() {
	c.once.Do(func() {
		close(c.dead)
		c.uc.Close()
	})
}

// shutdown ends the connection gracefully: nothing more is read or run,
// and what is queued for the client is still written.
func (c *conn) shutdown() {
	c.closing.Store(true)
	c.uc.CloseRead()
}

func (c *conn) serve() {
	s := c.mon.srv
	defer s.wg.Done()
	go c.writeLoop()
	defer func() {
		if c.inband != nil {
			close(c.inband)
			<-c.workerDone
		}
		c.held.release()
		c.held = nil
		close(c.finish)
		<-c.wdone
		c.kill()
		s.fds.OwnerGone(c.owner)
		// Last: a connection the server no longer lists is all gone.
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	c.send(Obj{{"QMP", Obj{{"version", Version}, {"capabilities", []any{"oob"}}}}}, false)

	framer := NewFramer(maxMessageSize, maxNesting)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(maxFdsPerRead*4))
	for {
		n, oobn, _, _, err := c.uc.ReadMsgUnix(buf, oob)
		n, oobn = max(n, 0), max(oobn, 0)
		if fds := receivedFds(oob[:oobn]); len(fds) > 0 {
			// The fds belong to the connection from now on, whatever
			// bytes came with them: qemu.qmp sends them with a lone
			// space, libvirt with the command that takes them.
			c.held.release()
			c.held = newHeldFds(fds)
		}
		for _, fr := range framer.Feed(buf[:n]) {
			c.frame(fr)
		}
		if err != nil || n == 0 {
			return
		}
	}
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

// frame decodes one framed message and runs it: an exec-oob at once, on
// the reader; anything else in order, in-band.
func (c *conn) frame(fr Frame) {
	if c.closing.Load() {
		return
	}
	r := &request{}
	switch {
	case fr.Err != nil:
		r.err = genericError("%s", fr.Err.Error())
	default:
		v, err := jsonval.Decode(fr.Data)
		switch {
		case err != nil:
			r.err = genericError("JSON parse error, %s", err.Error())
		case c.oob.Load() && isOOB(v):
			// Out of band: answered now, ahead of queued in-band work.
			c.send(c.dispatch(&call{conn: c}, v.(map[string]any), true), false)
			return
		default:
			m, ok := v.(map[string]any)
			if !ok {
				r.err = genericError("QMP input must be a JSON object")
			}
			r.msg = m
		}
	}
	r.fds = c.held.acquire()
	if c.inband == nil {
		c.run(r)
		// qmp_capabilities may just have enabled oob: from the next
		// message on, in-band requests go to the worker.
		if c.oob.Load() {
			c.inband = make(chan *request, inbandQueueLen-1)
			c.workerDone = make(chan struct{})
			go c.inbandWorker()
		}
		return
	}
	select {
	case c.inband <- r:
	case <-c.dead:
		r.fds.release()
	}
}

func (c *conn) inbandWorker() {
	defer close(c.workerDone)
	for r := range c.inband {
		select {
		case <-c.dead:
			r.fds.release()
		default:
			if c.closing.Load() {
				r.fds.release()
				continue
			}
			c.run(r)
		}
	}
}

// run executes an in-band request and sends its reply.
func (c *conn) run(r *request) {
	defer r.fds.release()
	call := &call{conn: c, fds: r.fds}
	var reply Obj
	if r.err != nil {
		reply = errorReply(r.err, nil)
	} else {
		reply = c.dispatch(call, r.msg, false)
	}
	c.send(reply, call.afterReply != nil)
	if call.afterReply != nil {
		call.afterReply()
	}
}

// call is one command being run: its connection and the fds the
// connection held when the command was read. A command that keeps an fd
// takes it with takeFd.
type call struct {
	*conn
	fds        *heldFds
	afterReply func()
}

func (c *call) takeFd() (int, error) {
	fd := c.fds.take()
	if fd < 0 {
		return -1, genericError("No file descriptor supplied via SCM_RIGHTS")
	}
	return fd, nil
}

// execute decodes one message and runs it in-band, as the reader does
// before oob is enabled; for tests and fuzzing.
func (c *conn) execute(call *call, data []byte) Obj {
	v, err := jsonval.Decode(data)
	if err != nil {
		return errorReply(genericError("JSON parse error, %s", err.Error()), nil)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return errorReply(genericError("QMP input must be a JSON object"), nil)
	}
	return c.dispatch(call, m, c.oob.Load() && isOOB(m))
}

// dispatch checks a message as QEMU's qmp_dispatch does, in its order, and
// runs the command. oob: the message is an exec-oob the client may send.
func (c *conn) dispatch(call *call, msg map[string]any, oob bool) Obj {
	id, hasID := msg["id"]
	var idp *any
	if hasID {
		idp = &id
	}
	execKey := ""
	for _, key := range slices.Sorted(maps.Keys(msg)) {
		switch {
		case key == "execute" || key == "exec-oob" && c.oob.Load():
			if _, ok := msg[key].(string); !ok {
				return errorReply(genericError("QMP input member '%s' must be a string", key), idp)
			}
			if execKey != "" {
				return errorReply(genericError("QMP input member '%s' clashes with '%s'", key, execKey), idp)
			}
			execKey = key
		case key == "arguments":
			if _, ok := msg[key].(map[string]any); !ok {
				return errorReply(genericError("QMP input member 'arguments' must be an object"), idp)
			}
		case key == "id":
		default:
			return errorReply(genericError("QMP input member '%s' is unexpected", key), idp)
		}
	}
	if execKey == "" {
		return errorReply(genericError("QMP input lacks member 'execute'"), idp)
	}
	name := msg[execKey].(string)
	rawArgs, _ := msg["arguments"].(map[string]any)
	if rawArgs == nil {
		rawArgs = map[string]any{}
	}
	cmd, found := commands[name]
	if !c.negotiated.Load() && name != "qmp_capabilities" {
		return errorReply(&Error{Class: CommandNotFound, Desc: "Expecting capabilities negotiation with 'qmp_capabilities'"}, idp)
	}
	if !found {
		return errorReply(&Error{Class: CommandNotFound, Desc: "The command " + name + " has not been found"}, idp)
	}
	if oob && !allowOOB(name) {
		return errorReply(genericError("The command %s does not support OOB", name), idp)
	}
	args := Args(rawArgs)
	if cmd.union != nil {
		var err error
		if args, err = checkUnion(cmd.union, rawArgs, ""); err != nil {
			return errorReply(err, idp)
		}
	} else if !cmd.raw {
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
