package monitor

import "sync"

// Run states, by QEMU's names.
const (
	StatePrelaunch = "prelaunch"
	StateRunning   = "running"
	StatePaused    = "paused"
	StateShutdown  = "shutdown"
)

// VM is the run state a monitor reports and changes (query-status, stop,
// cont, quit). minivmm runs no guest CPUs, so the state is all there is.
type VM struct {
	mu       sync.Mutex
	state    string
	emit     func(event string, data Obj)
	exit     chan struct{} // closed when the VMM should exit
	exitOnce sync.Once
	// quiesce, if set, runs when the VM stops: the block layer finishes
	// the requests in flight and flushes (QEMU's vm_stop).
	quiesce func() error
}

// OnStop sets what stopping the VM does to its block layer.
func (vm *VM) OnStop(quiesce func() error) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.quiesce = quiesce
}

// NewVM returns a VM that is running, or in prelaunch when paused (-S).
func NewVM(paused bool) *VM {
	state := StateRunning
	if paused {
		state = StatePrelaunch
	}
	return &VM{state: state, exit: make(chan struct{}), emit: func(string, Obj) {}}
}

// State is the current run state.
func (vm *VM) State() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.state
}

// Stop pauses a running VM and sends STOP; otherwise it does nothing, as
// QEMU does.
func (vm *VM) Stop() {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.state == StateRunning {
		vm.state = StatePaused
		if vm.quiesce != nil {
			// A flush error is not stop's to report; QEMU's vm_stop
			// carries on too.
			vm.quiesce()
		}
		vm.emit("STOP", nil)
	}
}

// Cont resumes a paused or prelaunch VM and sends RESUME; a running one is
// left alone without an event.
func (vm *VM) Cont() {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.state == StatePaused || vm.state == StatePrelaunch {
		vm.state = StateRunning
		vm.emit("RESUME", nil)
	}
}

// Shutdown enters the shutdown state and sends SHUTDOWN, for reason
// (QEMU's ShutdownCause names: "host-qmp-quit", "host-signal"). Only the
// first call counts.
func (vm *VM) Shutdown(reason string) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.state == StateShutdown {
		return
	}
	vm.state = StateShutdown
	vm.emit("SHUTDOWN", Obj{{"guest", false}, {"reason", reason}})
}

// RequestExit asks the VMM to exit; call Shutdown first.
func (vm *VM) RequestExit() { vm.exitOnce.Do(func() { close(vm.exit) }) }

// ExitRequested is closed when the VMM should exit.
func (vm *VM) ExitRequested() <-chan struct{} { return vm.exit }
