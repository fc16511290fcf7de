package cmdline

import (
	"encoding/json"
	"errors"
	"strings"

	"minivmm/vm/machine"
	"minivmm/vm/workload"
)

// hintError is an error QEMU follows with a hint line.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }
func (e *hintError) Hint() string  { return e.hint }

var memParams = memoryOpts.kinds()

// ParseMem parses the argument of -m, "[size=]SIZE[,slots=N,maxmem=SIZE]",
// into bytes: a number without a suffix is in MiB, as in QEMU; 0 is the
// default. slots and maxmem are checked and ignored (no memory hotplug).
func ParseMem(value string) (int64, error) {
	o, err := ParseOpts(value, "size")
	if err != nil {
		return 0, err
	}
	if o.ID != "" {
		return 0, paramError("id", o.ID, ErrInvalidParameter)
	}
	for _, e := range o.Elems {
		if _, ok := memParams[e.Key]; !ok {
			return 0, paramError(e.Key, e.Value, ErrInvalidParameter)
		}
	}
	s, _ := o.Get("size")
	if s != "" && s[len(s)-1] >= '0' && s[len(s)-1] <= '9' {
		s += "M"
	}
	n, err := ParseSize(s)
	if err != nil || n >= 1<<62 {
		return 0, &hintError{err: paramError("size", s, ErrSize),
			hint: "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively."}
	}
	if n == 0 {
		return machine.DefaultMemory, nil
	}
	return int64((n + 4095) &^ 4095), nil
}

// ParseDevice parses the argument of -device, "DRIVER[,id=ID][,prop=
// value...]" or a JSON object (QEMU 7.2 takes both), and checks it as
// device_add does.
func ParseDevice(value string) (machine.DeviceConfig, error) {
	props := map[string]any{}
	if strings.HasPrefix(value, "{") {
		d := json.NewDecoder(strings.NewReader(value))
		d.UseNumber()
		if err := d.Decode(&props); err != nil {
			return machine.DeviceConfig{}, errors.New("JSON parse error, " + err.Error())
		}
	} else {
		o, err := ParseOpts(value, "driver")
		if err != nil {
			return machine.DeviceConfig{}, err
		}
		if o.ID != "" {
			props["id"] = o.ID
		}
		for _, e := range o.Elems {
			props[e.Key] = e.Value
		}
	}
	return machine.ParseDeviceConfig(props)
}

// ParseWorkload parses the argument of -workload: fio's keys in QemuOpts
// syntax ("rw=randrw,bs=4k,iodepth=32,verify=on").
func ParseWorkload(value string) (workload.Spec, error) {
	return workload.Parse(value)
}
