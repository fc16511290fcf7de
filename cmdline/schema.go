package cmdline

import (
	"fmt"
	"slices"
)

// Param is one parameter of a QemuOpts option: what Validate accepts and
// what query-command-line-options shows.
type Param struct {
	Name string
	Kind Kind
	Help string // QEMU's help text, where it has one
}

// Params is an option's parameters in QEMU's declaration order.
type Params []Param

// kinds is the map Validate checks against.
func (ps Params) kinds() map[string]Kind {
	m := make(map[string]Kind, len(ps))
	for _, p := range ps {
		m[p.Name] = p.Kind
	}
	return m
}

// OptionInfo is one QemuOpts option (one that takes key=value,...) as
// query-command-line-options describes it.
type OptionInfo struct {
	Option string
	Params Params
}

// KindName is the CommandLineParameterType of k.
func KindName(k Kind) string {
	return [...]string{OptString: "string", OptBool: "boolean", OptNumber: "number", OptSize: "size"}[k]
}

// The parameters of minivmm's QemuOpts options, in QEMU's order, with its
// help texts. "id" is implied for every option that takes one and is not
// listed, as in QEMU.
var (
	addFdOpts = Params{
		{"fd", OptNumber, "file descriptor of which a duplicate is added to fd set"},
		{"set", OptNumber, "ID of the fd set to add fd to"},
		{"opaque", OptString, "free-form string used to describe fd"},
	}
	nameOpts = Params{
		{"guest", OptString, "Sets the name of the guest.\nThis name will be displayed in the SDL window caption.\nThe name will also be used for the VNC server"},
		{"process", OptString, "Sets the name of the QEMU process, as shown in top etc"},
		{"debug-threads", OptBool, "When enabled, name the individual threads; defaults off.\nNOTE: The thread names are for debugging and not a\nstable API."},
	}
	monOpts = Params{
		{"mode", OptString, ""},
		{"chardev", OptString, ""},
		{"pretty", OptBool, ""},
	}
	msgOpts = Params{
		{"timestamp", OptBool, ""},
		{"guest-name", OptBool, "Prepends guest name for error messages but only if -name guest is set otherwise option is ignored\n"},
	}
	machineOpts = Params{{"type", OptString, "emulated machine"}}
	// -m; -device's parameters are the device's properties, which QEMU
	// does not list.
	memoryOpts  = Params{{"size", OptSize, ""}, {"slots", OptNumber, ""}, {"maxmem", OptSize, ""}}
	chardevOpts = Params{
		{"backend", OptString, ""},
		{"path", OptString, ""},
		{"fd", OptString, ""},
		{"wait", OptBool, ""},
		{"server", OptBool, ""},
	}
)

// Options lists minivmm's QemuOpts options, sorted by name.
func Options() []OptionInfo {
	return []OptionInfo{
		{"add-fd", addFdOpts},
		{"chardev", chardevOpts},
		{"device", nil},
		{"drive", driveOpts},
		{"machine", machineOpts},
		{"memory", memoryOpts},
		{"mon", monOpts},
		{"msg", msgOpts},
		{"name", nameOpts},
	}
}

// LookupOption finds one of Options by name, with QEMU's error for a name
// it does not have.
func LookupOption(name string) (OptionInfo, error) {
	opts := Options()
	i := slices.IndexFunc(opts, func(o OptionInfo) bool { return o.Option == name })
	if i < 0 {
		return OptionInfo{}, fmt.Errorf("invalid option name: %s", name)
	}
	return opts[i], nil
}

// withID adds the implied "id" to an option's kinds.
func withID(k map[string]Kind) map[string]Kind {
	k["id"] = OptString
	return k
}
