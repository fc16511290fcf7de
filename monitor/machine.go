package monitor

import "minivmm/cmdline"

// What the VMM is: its name, accelerator, machine and command line, as
// management layers ask QEMU.

func queryName(c *call, _ Args) (any, error) {
	if name := c.mon.srv.vm.Name(); name != "" {
		return Obj{{"name", name}}, nil
	}
	return Obj{}, nil
}

// queryKVM: minivmm runs no guest CPUs and has no KVM support at all, so
// KVM is neither enabled nor present (QEMU built with KVM says present
// true even with -machine none).
func queryKVM(*call, Args) (any, error) {
	return Obj{{"enabled", false}, {"present", false}}, nil
}

// queryMachines lists minivmm's one machine, described as QEMU describes
// its "none".
func queryMachines(*call, Args) (any, error) {
	return []any{Obj{
		{"hotpluggable-cpus", false}, {"name", "none"}, {"numa-mem-supported", false},
		{"cpu-max", 1}, {"deprecated", false}, {"default-ram-id", "ram"},
	}}, nil
}

// queryCommandLineOptions describes the options that take key=value
// lists, from the tables their parsers check against. QEMU lists the
// parameters last-declared first; so does minivmm.
func queryCommandLineOptions(_ *call, args Args) (any, error) {
	opts := cmdline.Options()
	if name, ok := args.Str("option"); ok {
		o, err := cmdline.LookupOption(name)
		if err != nil {
			return nil, genericError("%s", err.Error())
		}
		opts = []cmdline.OptionInfo{o}
	}
	out := make([]any, len(opts))
	for i, o := range opts {
		params := make([]any, 0, len(o.Params))
		for j := len(o.Params) - 1; j >= 0; j-- {
			p := o.Params[j]
			e := Obj{{"name", p.Name}}
			if p.Help != "" {
				e = append(e, Member{"help", p.Help})
			}
			params = append(params, append(e, Member{"type", cmdline.KindName(p.Kind)}))
		}
		out[i] = Obj{{"parameters", params}, {"option", o.Option}}
	}
	return out, nil
}
