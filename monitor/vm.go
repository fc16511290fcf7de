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
	mu    sync.Mutex
	name  string // -name; empty: none
	state string
	// powerdownPending: system_powerdown came while the VM was not
	// running; it takes effect at the next cont, as a guest would act on
	// the ACPI event once it runs again.
	powerdownPending bool
	emit             func(event string, data Obj)
	exit             chan struct{} // closed when the VMM should exit
	exitOnce         sync.Once
	// quiesce, if set, runs when the VM stops: the block layer finishes
	// the requests in flight and flushes (QEMU's vm_stop).
	quiesce func() error
	// resume, if set, runs when the VM runs again (the devices' queues).
	resume func()
}

// OnCont sets what continuing the VM does (the devices resume).
func (vm *VM) OnCont(resume func()) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.resume = resume
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
		// STOP goes out before the block layer drains, as QEMU's
		// do_vm_stop sends it (the jobs the drain pauses follow it).
		vm.emit("STOP", nil)
		if vm.quiesce != nil {
			// A flush error is not stop's to report; QEMU's vm_stop
			// carries on too.
			vm.quiesce()
		}
	}
}

// Cont resumes a paused or prelaunch VM and sends RESUME; a running one is
// left alone without an event. The returned function, if not nil, is to
// run once the command's reply is out: a powerdown that was waiting for
// the VM to run.
func (vm *VM) Cont() (then func()) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.state == StatePaused || vm.state == StatePrelaunch {
		vm.state = StateRunning
		if vm.resume != nil {
			vm.resume()
		}
		vm.emit("RESUME", nil)
		if vm.powerdownPending {
			vm.powerdownPending = false
			return vm.guestShutdown
		}
	}
	return nil
}

// SetName sets the guest name (-name) that query-name reports.
func (vm *VM) SetName(name string) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.name = name
}

// Name is the guest name; empty when there is none.
func (vm *VM) Name() string {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	return vm.name
}

// Powerdown is system_powerdown: QEMU sends POWERDOWN and raises the ACPI
// power button; minivmm has no guest to press it for, so it acts as a
// guest that honours the button would: a running VM shuts down
// (SHUTDOWN, guest true, reason guest-shutdown) and the VMM exits; a
// paused one does so when it is continued. QEMU with -machine none, which
// has no ACPI, sends POWERDOWN and does nothing more. The shutdown comes
// after the command's reply, as the guest's would: the returned function,
// if not nil, is to run once the reply is out.
func (vm *VM) Powerdown() (then func()) {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.emit("POWERDOWN", nil)
	switch vm.state {
	case StateRunning:
		return vm.guestShutdown
	case StatePaused, StatePrelaunch:
		vm.powerdownPending = true
	}
	return nil
}

// guestShutdown is the guest powering itself off, and the VMM exiting.
func (vm *VM) guestShutdown() {
	vm.mu.Lock()
	if vm.state != StateShutdown {
		vm.state = StateShutdown
		vm.emit("SHUTDOWN", Obj{{"guest", true}, {"reason", "guest-shutdown"}})
	}
	vm.mu.Unlock()
	vm.RequestExit()
}

// Reset is system_reset: RESET, reason host-qmp-system-reset (QEMU uses
// it for HMP's system_reset too). The run state stays as it was.
func (vm *VM) Reset() {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	vm.emit("RESET", Obj{{"guest", false}, {"reason", "host-qmp-system-reset"}})
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
