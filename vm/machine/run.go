package machine

import (
	"errors"
	"fmt"
	"sync"

	"minivmm/vm/workload"
)

// run is a workload running on some of the machine's devices.
type run struct {
	devices []*Device
	cancel  func()
	done    chan struct{}
}

// ErrNoDevice is a workload on a machine without a virtio-blk device.
var ErrNoDevice = errors.New("no virtio-blk device to run a workload on")

// RunWorkload runs spec on the devices it names (all, if none) from the
// guest's vCPUs, and returns what it measured. It waits while the
// machine is stopped; a device unplugged meanwhile ends it early.
func (m *Machine) RunWorkload(spec workload.Spec, o workload.Options) (*workload.Result, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, errors.New("machine is shut down")
	}
	var devs []*Device
	if len(spec.Devices) == 0 {
		for _, d := range m.devices {
			if !d.unplugging {
				devs = append(devs, d)
			}
		}
		if len(devs) == 0 {
			m.mu.Unlock()
			return nil, ErrNoDevice
		}
	}
	for _, id := range spec.Devices {
		d := m.findLocked(id)
		if d == nil || d.unplugging {
			m.mu.Unlock()
			return nil, &ErrDeviceNotFound{ID: id}
		}
		devs = append(devs, d)
	}
	cancel := make(chan struct{})
	r := &run{devices: devs, done: make(chan struct{})}
	r.cancel = sync.OnceFunc(func() {
		close(cancel)
		m.cpus.wake()
	})
	m.runs[r] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.runs, r)
		m.mu.Unlock()
		close(r.done)
	}()
	if o.Cancel != nil {
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-o.Cancel:
				r.cancel()
			case <-stop:
			}
		}()
	}
	o.Cancel = cancel
	o.Gate = func() bool { return m.cpus.wait(cancel) }
	o.Stopped = m.cpus.stopped
	targets := make([]workload.Target, len(devs))
	for i, d := range devs {
		name := d.cfg.ID
		if name == "" {
			name = d.path
		}
		targets[i] = workload.Target{Name: name, Disk: d.disk, Shadow: d.shadow}
	}
	res, err := workload.Run(spec, targets, o)
	if err != nil {
		return nil, err
	}
	for _, d := range devs {
		if e := d.Err(); e != nil {
			res.IOErrors++
			if res.FirstIOError == "" {
				res.FirstIOError = fmt.Sprintf("%s: %v", d.path, e)
			}
		}
	}
	return res, nil
}
