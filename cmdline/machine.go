package cmdline

import "fmt"

var nameParams = nameOpts.kinds()

// ParseName parses the argument of -name, "NAME" or
// "guest=NAME[,process=P][,debug-threads=on]", and returns the guest
// name. process and debug-threads are checked and ignored.
func ParseName(value string) (string, error) {
	o, err := ParseOpts(value, "guest")
	if err == nil {
		err = o.Validate(nameParams)
	}
	if err != nil {
		return "", err
	}
	guest, _ := o.Get("guest")
	return guest, nil
}

// ParseMachine checks the argument of -machine or -M: minivmm emulates
// no hardware, so only "none" ("type=none") is accepted.
func ParseMachine(value string) error {
	return onlyNone(value, "machine type")
}

// ParseDisplay checks the argument of -display: minivmm has no display,
// so only "none" is accepted.
func ParseDisplay(value string) error {
	return onlyNone(value, "display type")
}

func onlyNone(value, what string) error {
	o, err := ParseOpts(value, "type")
	if err == nil {
		err = o.Validate(machineOpts.kinds())
	}
	if err != nil {
		return err
	}
	if t, _ := o.Get("type"); t != "none" {
		return fmt.Errorf("%s '%s' is not supported: minivmm has only 'none'", what, t)
	}
	return nil
}
