package block

// Driver events: what a driver tells the monitor of, beyond corruption
// and write-back failures (QEMU's QUORUM_REPORT_BAD and QUORUM_FAILURE,
// which quorum sends from its IO paths).

// EventMember is one member of an event's data, in QAPI's order.
type EventMember struct {
	Key   string
	Value any
}

// DriverEvent is a QMP event a driver raises: its name and data.
type DriverEvent struct {
	Name string
	Data []EventMember
}

// OnDriverEvent sets who hears the events drivers raise (the QMP
// monitor, which sends them on). f may run on any goroutine, from IO.
func (g *Graph) OnDriverEvent(f func(DriverEvent)) { g.onDriverEvent.Store(&f) }

// EmitEvent returns the function a driver raises events with, to keep
// and call at any time; nothing hears them until OnDriverEvent is set.
func (o *OpenContext) EmitEvent() func(DriverEvent) {
	g := o.g
	return func(e DriverEvent) {
		if f := g.onDriverEvent.Load(); f != nil {
			(*f)(e)
		}
	}
}
