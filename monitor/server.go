// Package monitor is minivmm's QMP server: unix-socket monitors that speak
// QEMU's QMP, take file descriptors as SCM_RIGHTS ancillary data, and share
// one fdset registry.
package monitor

import (
	"errors"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/export"
	"minivmm/block/export/nbd"
	"minivmm/block/jobs"
	"minivmm/block/objects"
	"minivmm/qemuopen"
	"minivmm/vm/machine"
)

// MinivmmVersion is minivmm's own version: query-version's package, and
// what -version, img --version and io -V print beside QEMU's.
const MinivmmVersion = "0.1.0"

// Version is what query-version and the greeting report. minivmm speaks the
// QMP of QEMU 9.1 for fdsets (access mode and O_DIRECT must match);
// Package says who is speaking.
var Version = Obj{
	{"qemu", Obj{{"micro", 0}, {"minor", 1}, {"major", 9}}},
	{"package", "minivmm " + MinivmmVersion},
}

// Limits on one QMP message: QEMU's nesting limit, and a size far above
// anything a real command needs, so a hostile client costs bounded memory.
const (
	maxMessageSize = 4 << 20
	maxNesting     = 1024
	// writeTimeout bounds how long one write to a client that stops
	// reading may take; past it the connection is dropped. Only the
	// connection's own writer waits that long (events.go).
	writeTimeout = 10 * time.Second
	// closeFlushTimeout bounds how long Close waits for clients to take
	// the messages queued for them before it drops them.
	closeFlushTimeout = 2 * time.Second
)

// Server runs any number of monitors over one VM and one fdset registry.
type Server struct {
	fds   *qemuopen.Registry
	graph *block.Graph
	vm    *VM
	jobs  *jobs.Manager // block jobs (jobs.go)

	exports *export.Table // block-export-add and friends; nil until SetExports
	nbd     *nbd.Service  // nbd-server-start and friends; nil until SetExports
	// machine, if set (SetMachine), holds the devices (device.go).
	machine *machine.Machine

	mu       sync.Mutex
	monitors []*Monitor
	conns    map[*conn]struct{}
	closed   bool
	wg       sync.WaitGroup
	stdio    sync.WaitGroup // -qmp stdio output still being copied out
}

// NewServer returns a server for vm whose add-fd and friends act on fds,
// and whose block commands act on graph.
func NewServer(fds *qemuopen.Registry, graph *block.Graph, vm *VM) *Server {
	s := &Server{fds: fds, graph: graph, vm: vm, conns: map[*conn]struct{}{}}
	if graph.Objects() == nil {
		graph.SetObjects(objects.NewRegistry()) // object-add's, if the process made none
	}
	s.jobs = jobs.NewManager(s.emitJobEvent)
	graph.ObserveDrains(s.jobs.DrainObserver())
	vm.OnStop(graph.Quiesce)
	vm.emit = s.Emit
	graph.OnCorruption(func(c block.Corruption) {
		data := Obj{{"device", ""}, {"node-name", c.Node}, {"msg", c.Msg}}
		if c.Offset >= 0 {
			data = append(data, Member{"offset", c.Offset})
		}
		if c.Size >= 0 {
			data = append(data, Member{"size", c.Size})
		}
		s.Emit("BLOCK_IMAGE_CORRUPTED", append(data, Member{"fatal", c.Fatal}))
	})
	graph.OnWriteBackError(func(e block.WriteBackError) { s.Emit("BLOCK_IO_ERROR", writeBackErrorData(e)) })
	graph.OnDriverEvent(func(e block.DriverEvent) { // quorum's QUORUM_REPORT_BAD, QUORUM_FAILURE
		data := make(Obj, len(e.Data))
		for i, m := range e.Data {
			data[i] = Member{m.Key, m.Value}
		}
		s.Emit(e.Name, data)
	})
	return s
}

// Monitor is one QMP listening socket (QEMU's -mon / -qmp).
type Monitor struct {
	listener
	srv    *Server
	pretty bool

	// Named fds (getfd/closefd) belong to the monitor, not to one
	// connection, as in QEMU: a client may reconnect and still use them.
	namedMu sync.Mutex
	named   map[string]int
}

// Listen creates a unix socket at path, mode 0600, and serves QMP on it.
// A stale socket file left by a dead process is replaced; any other file
// at path is an error.
func (s *Server) Listen(path string, pretty bool) (*Monitor, error) {
	fd, err := bindUnix(path)
	if err != nil {
		return nil, err
	}
	m, err := s.serveFd(fd, path, pretty)
	if err != nil {
		os.Remove(path)
	}
	return m, err
}

// ListenFd serves QMP on an inherited listening socket (libvirt's
// -chardev socket,fd=N,server=on). It takes ownership of fd.
func (s *Server) ListenFd(fd int, pretty bool) (*Monitor, error) {
	if err := adoptListeningFd(fd); err != nil {
		return nil, err
	}
	return s.serveFd(fd, "", pretty)
}

func (s *Server) serveFd(fd int, path string, pretty bool) (*Monitor, error) {
	ul, err := unixListener(fd)
	if err != nil {
		return nil, err
	}
	m := &Monitor{listener: newListener(), srv: s, pretty: pretty, named: map[string]int{}}
	m.ln, m.path = ul, path
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ul.Close()
		return nil, errors.New("monitor server is shut down")
	}
	s.monitors = append(s.monitors, m)
	s.wg.Add(1)
	s.mu.Unlock()
	go m.accept()
	return m, nil
}

func (m *Monitor) accept() {
	defer m.srv.wg.Done()
	m.acceptLoop(func(uc *net.UnixConn) {
		if c := m.srv.newConn(m, uc); c != nil {
			go c.serve()
		} else {
			uc.Close()
		}
	})
}

// Close stops every monitor: listeners closed, socket files removed,
// connections closed (their fds handled by the closing rules), named fds
// closed. It waits for the connection goroutines to finish.
func (s *Server) Close() {
	// Jobs end before anything else goes (QEMU's job_cancel_sync_all at
	// exit): their graph changes are undone and their events reach the
	// clients still connected.
	s.jobs.CancelAll()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	monitors := s.monitors
	conns := slices.Collect(maps.Keys(s.conns))
	for _, c := range conns {
		c.shutdown()
	}
	s.mu.Unlock()
	for _, m := range monitors {
		if m.ln == nil {
			continue // stdio: nothing listens
		}
		m.ln.Close()
		if m.path != "" {
			os.Remove(m.path)
		}
	}
	// Clients get what was queued for them (the SHUTDOWN event, quit's
	// reply to another client) unless they are slow to take it.
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeFlushTimeout):
		for _, c := range conns {
			c.kill()
		}
		<-done
	}
	s.waitStdio(closeFlushTimeout)
	for _, m := range monitors {
		m.namedMu.Lock()
		for name, fd := range m.named {
			unix.Close(fd)
			delete(m.named, name)
		}
		m.namedMu.Unlock()
	}
}

// listenBacklog is the system's largest listen backlog, so that a burst of
// clients connecting at once (a management layer reconnecting to many
// VMs) is queued rather than refused with EAGAIN.
func listenBacklog() int {
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	return unix.SOMAXCONN
}
