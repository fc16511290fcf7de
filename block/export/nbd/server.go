package nbd

import (
	"crypto/tls"
	"net"
	"sync"
	"syscall"

	"minivmm/qemuopen"
)

// server accepts clients on one listener; each is served on its own
// goroutine, through the handshake and then transmission.
type server struct {
	svc      *Service
	ln       net.Listener
	maxConns uint32
	slots    chan struct{} // nil: no limit
	tlsConf  *tls.Config   // nil: no TLS

	mu     sync.Mutex
	conns  map[*conn]struct{}
	closed bool
	wg     sync.WaitGroup // accept loop and every conn
}

func newServer(svc *Service, ln net.Listener, maxConns uint32, tlsConf *tls.Config) *server {
	s := &server{svc: svc, ln: ln, maxConns: maxConns, tlsConf: tlsConf, conns: map[*conn]struct{}{}}
	if maxConns > 0 {
		s.slots = make(chan struct{}, maxConns)
	}
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *server) accept() {
	defer s.wg.Done()
	for {
		// With max-connections reached, the next client waits in the
		// listen backlog, as QEMU stops listening until one leaves.
		if s.slots != nil {
			s.slots <- struct{}{}
		}
		nc, err := s.ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				s.release()
				continue
			}
			return // closed
		}
		c := newConn(s.svc, nc)
		c.tlsConf = s.tlsConf
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			s.release()
		}()
	}
}

func (s *server) release() {
	if s.slots != nil {
		<-s.slots
	}
}

// close stops listening, disconnects every client and returns once
// their goroutines have ended.
func (s *server) close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.shutdown()
	}
	s.mu.Unlock()
	s.ln.Close()
	// The accept loop may wait for a slot that the conns give back as
	// they end; they do, since each was shut down.
	s.wg.Wait()
}

func errnoText(e syscall.Errno) string { return qemuopen.Strerror(e) }
