package monitor

import (
	"errors"
	"strings"

	"minivmm/vm/machine"
	"minivmm/vm/workload"
)

// The built-in machine's commands: device_add, device_del and qom-list
// as QEMU has them, and x-workload (minivmm's own, hence QEMU's x-
// prefix), which runs the built-in guest's workload.

var (
	tDeviceAddArgs = []param{req("driver", tStr), opt("bus", tStr), opt("id", tStr)}

	tObjectPropertyInfo = object("ObjectPropertyInfo", req("name", tStr), req("type", tStr),
		opt("description", tStr), opt("default-value", tAny))

	tWorkloadLatency = object("x-WorkloadLatency", req("min", tInt), req("max", tInt), req("mean", tInt),
		req("p50", tInt), req("p90", tInt), req("p99", tInt), req("p99.9", tInt))
	tWorkloadDir = object("x-WorkloadDirection", req("ios", tInt), req("bytes", tInt),
		req("iops", tNumber), req("bw", tNumber), req("lat-ns", tWorkloadLatency))
	tWorkloadMismatch = object("x-WorkloadMismatch", req("device", tStr), req("offset", tInt), req("kind", tStr),
		req("expected", arrayOf(tInt)), req("found-generation", tInt), req("found-offset", tInt), req("message", tStr))
	tWorkloadResult = object("x-WorkloadResult", req("spec", tStr), req("elapsed-ns", tInt),
		req("read", tWorkloadDir), req("write", tWorkloadDir), req("verify", tWorkloadDir),
		req("checked-sectors", tInt), req("unverified-sectors", tInt), req("mismatch-count", tInt),
		req("mismatches", arrayOf(tWorkloadMismatch)), req("io-errors", tInt), opt("first-io-error", tStr),
		req("ok", tBool))
)

func init() {
	commands["device_add"] = command{params: tDeviceAddArgs, run: deviceAdd, raw: true}
	commands["device_del"] = command{params: []param{req("id", tStr)}, run: deviceDel}
	commands["qom-list"] = command{params: []param{req("path", tStr)}, run: qomList, ret: arrayOf(tObjectPropertyInfo)}
	commands["x-workload"] = command{params: []param{req("spec", tStr), opt("progress", tBool)}, run: xWorkload, ret: tWorkloadResult}
	events["DEVICE_DELETED"] = object("q_obj_DEVICE_DELETED-arg", opt("device", tStr), req("path", tStr))
	events["X_WORKLOAD_COMPLETED"] = object("q_obj_X_WORKLOAD_COMPLETED-arg", req("result", tWorkloadResult))
	events["X_WORKLOAD_PROGRESS"] = object("q_obj_X_WORKLOAD_PROGRESS-arg", req("line", tStr), req("percent", tNumber),
		req("read-iops", tNumber), req("write-iops", tNumber), req("eta-ns", tInt))
}

// SetMachine gives the monitor the machine whose devices it manages.
func (s *Server) SetMachine(m *machine.Machine) { s.machine = m }

func (c *call) machine() (*machine.Machine, error) {
	if m := c.mon.srv.machine; m != nil {
		return m, nil
	}
	return nil, genericError("this VMM has no machine")
}

func deviceAdd(c *call, args Args) (any, error) {
	// The declared members' types first, as QEMU's visitor does; the
	// others are the device's properties.
	declaredOnly := map[string]any{}
	for _, p := range tDeviceAddArgs {
		if v, ok := args[p.name]; ok {
			declaredOnly[p.name] = v
		}
	}
	if _, err := checkArgs(tDeviceAddArgs, declaredOnly); err != nil {
		return nil, err
	}
	m, err := c.machine()
	if err != nil {
		return nil, err
	}
	props := map[string]any(args)
	delete(props, "bus")
	cfg, err := machine.ParseDeviceConfig(props)
	if err != nil {
		return nil, genericError("%s", err.Error())
	}
	if _, err := m.AddDevice(cfg); err != nil {
		return nil, genericError("%s", err.Error())
	}
	return nil, nil
}

func deviceDel(c *call, args Args) (any, error) {
	m, err := c.machine()
	if err != nil {
		return nil, err
	}
	id, _ := args.Str("id")
	srv := c.mon.srv
	start, err := m.DelDevice(id, func(d *machine.Device, _ error) {
		// The guest has let the device go: QEMU's events, the
		// virtio-blk-device inside first.
		srv.Emit("DEVICE_DELETED", Obj{{"path", d.Path() + "/virtio-backend"}})
		srv.Emit("DEVICE_DELETED", Obj{{"device", d.ID()}, {"path", d.Path()}})
	})
	var nf *machine.ErrDeviceNotFound
	switch {
	case errors.As(err, &nf):
		return nil, &Error{Class: DeviceNotFound, Desc: err.Error()}
	case err != nil:
		return nil, genericError("%s", err.Error())
	}
	c.afterReply = start
	return nil, nil
}

func prop(name, typ string) Obj { return Obj{{"name", name}, {"type", typ}} }

// qomList lists the QOM paths of the machine that libvirt looks at:
// /machine/peripheral (the devices with an id, libvirt's aliases),
// /machine/peripheral-anon, and each device.
func qomList(c *call, args Args) (any, error) {
	path, _ := args.Str("path")
	notFound := &Error{Class: DeviceNotFound, Desc: "Device '" + path + "' not found"}
	m := c.mon.srv.machine
	if m == nil {
		return nil, notFound
	}
	path = strings.TrimSuffix(path, "/")
	out := []any{prop("type", "string")}
	switch path {
	case "", "/":
		return append(out, prop("machine", "child<none-machine>")), nil
	case "/machine":
		return append(out, prop("peripheral", "child<container>"), prop("peripheral-anon", "child<container>")), nil
	case "/machine/peripheral", "/machine/peripheral-anon":
		for _, d := range m.Devices() {
			dir, name, _ := cutLast(d.Path())
			if dir == path {
				out = append(out, prop(name, "child<"+d.Config().Driver+">"))
			}
		}
		return out, nil
	}
	for _, d := range m.Devices() {
		switch path {
		case d.Path():
			return append(out, prop("parent_bus", "link<bus>"), prop("realized", "bool"),
				prop("hotplugged", "bool"), prop("hotpluggable", "bool"),
				prop("virtio-backend", "child<virtio-blk-device>")), nil
		case d.Path() + "/virtio-backend":
			return append(out, prop("drive", "str"), prop("num-queues", "uint16"),
				prop("queue-size", "uint16"), prop("serial", "str")), nil
		}
	}
	return nil, notFound
}

func cutLast(p string) (dir, name string, ok bool) {
	i := strings.LastIndex(p, "/")
	if i < 0 {
		return "", p, false
	}
	return p[:i], p[i+1:], true
}

func xWorkload(c *call, args Args) (any, error) {
	m, err := c.machine()
	if err != nil {
		return nil, err
	}
	s, _ := args.Str("spec")
	spec, err := workload.Parse(s)
	if err != nil {
		return nil, genericError("%s", err.Error())
	}
	var opts workload.Options
	if on, _ := args["progress"].(bool); on {
		srv := c.mon.srv
		opts.Progress = func(p workload.Progress) {
			srv.Emit("X_WORKLOAD_PROGRESS", Obj{{"line", p.String()}, {"percent", p.Percent},
				{"read-iops", p.ReadIOPS}, {"write-iops", p.WriteIOPS}, {"eta-ns", int64(p.ETA)}})
		}
	}
	res, err := m.RunWorkload(spec, opts)
	if err != nil {
		var nf *machine.ErrDeviceNotFound
		if errors.As(err, &nf) {
			return nil, &Error{Class: DeviceNotFound, Desc: err.Error()}
		}
		return nil, genericError("%s", err.Error())
	}
	obj := WorkloadResult(res)
	c.mon.srv.Emit("X_WORKLOAD_COMPLETED", Obj{{"result", obj}})
	return obj, nil
}

// WorkloadResult renders a workload's result as x-workload returns it and
// X_WORKLOAD_COMPLETED carries it.
func WorkloadResult(r *workload.Result) Obj {
	dir := func(d workload.DirResult) Obj {
		l := d.Lat
		return Obj{{"ios", d.IOs}, {"bytes", d.Bytes}, {"iops", d.IOPS}, {"bw", d.BW},
			{"lat-ns", Obj{{"min", int64(l.Min)}, {"max", int64(l.Max)}, {"mean", int64(l.Mean)},
				{"p50", int64(l.P50)}, {"p90", int64(l.P90)}, {"p99", int64(l.P99)}, {"p99.9", int64(l.P999)}}}}
	}
	mm := make([]any, len(r.Mismatches))
	for i, x := range r.Mismatches {
		exp := make([]any, len(x.Expected))
		for j, g := range x.Expected {
			exp[j] = int64(g)
		}
		mm[i] = Obj{{"device", x.Device}, {"offset", x.Offset}, {"kind", x.Kind}, {"expected", exp},
			{"found-generation", int64(x.FoundGen)}, {"found-offset", x.FoundOff}, {"message", x.String()}}
	}
	o := Obj{{"spec", r.Spec.String()}, {"elapsed-ns", int64(r.Elapsed)},
		{"read", dir(r.Read)}, {"write", dir(r.Write)}, {"verify", dir(r.Verify)},
		{"checked-sectors", r.Checked}, {"unverified-sectors", r.Unverified},
		{"mismatch-count", r.MismatchCount}, {"mismatches", mm}, {"io-errors", r.IOErrors}}
	if r.FirstIOError != "" {
		o = append(o, Member{"first-io-error", r.FirstIOError})
	}
	return append(o, Member{"ok", r.OK()})
}
