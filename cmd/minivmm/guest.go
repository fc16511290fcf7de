package main

import (
	"fmt"
	"io"
	"os"

	"minivmm/cmdline"
	"minivmm/monitor"
	"minivmm/vm/machine"
	"minivmm/vm/workload"
)

// startMachine makes the machine (-m) and its devices (-device, in
// order), and parses the -workload options; without -device or
// -workload there is still a machine, for device_add.
func (v *vmm) startMachine(occ []cmdline.Occurrence, paused bool) ([]workload.Spec, error) {
	mem := int64(machine.DefaultMemory)
	for _, oc := range occ {
		if oc.Name != "m" {
			continue
		}
		n, err := cmdline.ParseMem(oc.Value)
		if err != nil {
			return nil, oc.Wrap(err)
		}
		mem = n
	}
	var specs []workload.Spec
	for _, oc := range occ {
		if oc.Name != "workload" {
			continue
		}
		s, err := cmdline.ParseWorkload(oc.Value)
		if err != nil {
			return nil, oc.Wrap(err)
		}
		specs = append(specs, s)
	}
	m, err := machine.New(v.graph, mem, paused)
	if err != nil {
		return nil, fmt.Errorf("cannot set up guest RAM: %w", err)
	}
	v.machine = m
	// -drive if=virtio: an anonymous virtio-blk-pci on the drive, as
	// QEMU's, before the -device ones.
	for _, id := range v.virtioDrives {
		cfg, err := machine.ParseDeviceConfig(map[string]any{"driver": "virtio-blk-pci", "drive": id})
		if err == nil {
			_, err = m.AddDevice(cfg)
		}
		if err != nil {
			return nil, err
		}
	}
	for _, oc := range occ {
		if oc.Name != "device" {
			continue
		}
		cfg, err := cmdline.ParseDevice(oc.Value)
		if err == nil {
			_, err = m.AddDevice(cfg)
		}
		if err != nil {
			return nil, oc.Wrap(err)
		}
	}
	return specs, nil
}

// connectMachine lets the monitor manage the machine's devices, and stop
// and cont pause and resume them: the devices' queues drain before the
// block layer is quiesced.
func (v *vmm) connectMachine() {
	m := v.machine
	v.srv.SetMachine(m)
	v.vm.OnStop(func() error {
		m.Pause()
		return v.graph.Quiesce()
	})
	v.vm.OnCont(m.Resume)
	// A workload a client runs (x-workload) ends when the VMM exits, so
	// that its connection, and the exit, do not wait for it.
	go func() {
		<-v.vm.ExitRequested()
		m.CancelWorkloads()
	}()
}

// runWorkloads runs the -workload options one after the other, printing
// each result on stdout (unless a monitor uses it) and sending it as
// X_WORKLOAD_COMPLETED. The returned channel is closed when they are done;
// the VMM exiting cuts them short.
func (v *vmm) runWorkloads(specs []workload.Spec, stdout io.Writer, print bool) <-chan struct{} {
	done := make(chan struct{})
	if len(specs) == 0 {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		for _, s := range specs {
			opts := workload.Options{Cancel: v.vm.ExitRequested()}
			if print && isTTY(os.Stderr) {
				opts.Progress = func(p workload.Progress) { fmt.Fprintf(os.Stderr, "\r%s ", p) }
			}
			res, err := v.machine.RunWorkload(s, opts)
			if opts.Progress != nil {
				fmt.Fprintln(os.Stderr)
			}
			if err != nil {
				v.rep.Printf("-workload %s: %v", s, err)
				continue
			}
			if print {
				fmt.Fprint(stdout, res)
			}
			v.srv.Emit("X_WORKLOAD_COMPLETED", monitor.Obj{monitor.Member{Key: "result", Value: monitor.WorkloadResult(res)}})
		}
	}()
	return done
}

// stdioTaken tells whether a monitor or chardev uses stdin/stdout.
func stdioTaken(occ []cmdline.Occurrence) bool {
	for _, oc := range occ {
		if usesStdio(oc) {
			return true
		}
	}
	return false
}
