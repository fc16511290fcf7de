package block

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// gate counts a node's requests in flight and holds new ones back while
// the node is drained: QEMU's in_flight counter and quiesce_counter.
//
// A request enters with an atomic increment of inflight and a look at
// closedOrQuiesced; a drain sets closedOrQuiesced and then looks at
// inflight. Both are sequentially consistent, so either the request sees
// the drain (and backs out to wait) or the drain sees the request (and
// waits for it to end): the fast path takes no lock.
type gate struct {
	inflight atomic.Int64
	held     atomic.Bool // quiesced or closed: requests take the slow path

	mu      sync.Mutex
	cond    sync.Cond
	quiesce int  // drained sections open on the node
	closed  bool // the node is closed: requests fail
}

// ErrClosed is a request on a node that has been closed (deleted, or its
// graph closed): it never reaches the fd the node held, which may by now
// be another image's. It is an ENOMEDIUM, as a QEMU request on a backend
// without a medium.
var ErrClosed error = closedError{}

type closedError struct{}

func (closedError) Error() string { return "node is closed" }
func (closedError) Unwrap() error { return unix.ENOMEDIUM }

func (gt *gate) init() { gt.cond.L = &gt.mu }

// enter admits a request, waiting while the node is drained; it fails
// once the node is closed.
func (gt *gate) enter() error {
	for {
		gt.inflight.Add(1)
		if !gt.held.Load() {
			return nil
		}
		gt.leave()
		gt.mu.Lock()
		for gt.quiesce > 0 && !gt.closed {
			gt.cond.Wait()
		}
		closed := gt.closed
		gt.mu.Unlock()
		if closed {
			return ErrClosed
		}
	}
}

// leave ends a request, waking a drain waiting for the last one.
func (gt *gate) leave() {
	if gt.inflight.Add(-1) == 0 && gt.held.Load() {
		gt.mu.Lock()
		gt.cond.Broadcast()
		gt.mu.Unlock()
	}
}

// begin opens a drained section: new requests wait, and begin returns
// once none is in flight.
func (gt *gate) begin() {
	gt.mu.Lock()
	gt.quiesce++
	gt.held.Store(true)
	for gt.inflight.Load() > 0 {
		gt.cond.Wait()
	}
	gt.mu.Unlock()
}

// end closes a drained section; the last one lets waiting requests in.
func (gt *gate) end() {
	gt.mu.Lock()
	gt.quiesce--
	if gt.quiesce == 0 && !gt.closed {
		gt.held.Store(false)
	}
	gt.cond.Broadcast()
	gt.mu.Unlock()
}

// close fails every request from now on, and those waiting at the gate.
// The caller has drained the node.
func (gt *gate) close() {
	gt.mu.Lock()
	gt.closed = true
	gt.held.Store(true)
	gt.cond.Broadcast()
	gt.mu.Unlock()
}

func (gt *gate) isClosed() bool {
	gt.mu.Lock()
	defer gt.mu.Unlock()
	return gt.closed
}

// InFlight is how many requests are running on the node now (requests a
// parent passes down count on both).
func (n *Node) InFlight() int64 { return n.gate.inflight.Load() }

// Drain waits for the requests in flight on n and holds new ones back
// until end is called; n's parents (and theirs) are drained first, so
// that no request can arrive from above either. While drained, n's
// children still serve requests: the drainer may flush or close n, and
// n's driver reaches its children to do so.
func (n *Node) Drain() (end func()) {
	n.g.mu.Lock()
	nodes := drainOrder([]*Node{n})
	n.g.mu.Unlock()
	return drainNodes(nodes)
}

// Drain drains every node of the graph (QEMU's bdrv_drain_all_begin):
// nothing is in flight, and nothing starts, until end is called. The
// graph may not change in between.
func (g *Graph) Drain() (end func()) {
	g.mu.Lock()
	nodes := drainOrder(g.order)
	g.mu.Unlock()
	return drainNodes(nodes)
}

// drainOrder lists nodes and all their ancestors, every parent before its
// children: draining in that order, a request already admitted above is
// never held at a gate below while the drain waits for it above.
func drainOrder(nodes []*Node) []*Node {
	var out []*Node
	seen := map[*Node]bool{}
	var visit func(n *Node)
	visit = func(n *Node) {
		if seen[n] {
			return
		}
		seen[n] = true
		for p := range n.parents {
			visit(p)
		}
		out = append(out, n)
	}
	for _, n := range nodes {
		visit(n)
	}
	return out
}

func drainNodes(nodes []*Node) (end func()) {
	observed := observeDrain(nodes)
	for _, n := range nodes {
		n.gate.begin()
	}
	return sync.OnceFunc(func() {
		for _, n := range slices.Backward(nodes) {
			n.gate.end()
		}
		observed()
	})
}

// Flush flushes every node, parents before their children, so that what
// a format writes back on flush reaches its file before the file is
// synced (QEMU's bdrv_flush_all). It returns the first error, after
// trying every node.
func (g *Graph) Flush() error {
	g.mu.Lock()
	nodes := drainOrder(g.order)
	g.mu.Unlock()
	var first error
	for _, n := range nodes {
		if err := n.Flush(); err != nil && first == nil && !errors.Is(err, ErrClosed) {
			first = err
		}
	}
	return first
}

// Quiesce is what stopping the VM does to the block layer (QEMU's
// vm_stop): wait for every request in flight, then flush every node.
func (g *Graph) Quiesce() error {
	g.Drain()()
	return g.Flush()
}
