package cmdline

import (
	"errors"
	"fmt"
)

// Mon is a -mon option: a monitor on a chardev.
type Mon struct {
	ID      string
	Chardev string
	Mode    string // "readline" (HMP, QEMU's default) or "control" (QMP)
	Pretty  bool
}

var monParams = withID(monOpts.kinds())

// ParseMon parses the argument of -mon, "chardev=ID[,mode=control|
// readline][,id=X][,pretty=on]".
func ParseMon(value string) (Mon, error) {
	o, err := ParseOpts(value, "chardev")
	if err == nil {
		err = o.Validate(monParams)
	}
	if err != nil {
		return Mon{}, err
	}
	m := Mon{ID: o.ID, Mode: "readline"}
	if v, ok := o.Get("mode"); ok {
		m.Mode = v
	}
	m.Pretty, _ = o.Bool("pretty", false)
	chardev, ok := o.Get("chardev")
	switch {
	case m.Mode != "control" && m.Mode != "readline":
		return Mon{}, fmt.Errorf("Parameter 'mode' does not accept value '%s'", m.Mode)
	case !ok:
		return Mon{}, errors.New("Parameter 'chardev' is missing")
	case m.Pretty && m.Mode == "readline":
		return Mon{}, errors.New("'pretty' is not compatible with HMP monitors")
	}
	m.Chardev = chardev
	return m, nil
}

// ParseMonitor parses the argument of -monitor, a human monitor on a
// chardev given inline: "stdio", "none" (Backend "none": no monitor),
// "chardev:ID" or "unix:PATH,server=on[,wait=off]" as -qmp takes them.
func ParseMonitor(value string) (Chardev, error) {
	if value == "none" {
		return Chardev{Backend: "none", Fd: -1}, nil
	}
	return parseMonitorDev(value, "-monitor takes stdio, none, unix:PATH,server=on or chardev:ID")
}

// Msg is the -msg option: how error messages are written.
type Msg struct {
	Timestamp bool // prefix messages with the UTC time, as QEMU does
	GuestName bool // prefix messages with the guest name, when -name gave one
}

// ParseMsg parses the argument of -msg, "timestamp[=on|off][,guest-name=
// on|off]".
func ParseMsg(value string) (Msg, error) {
	o, err := ParseOpts(value, "")
	if err == nil {
		err = o.Validate(msgOpts.kinds())
	}
	if err != nil {
		return Msg{}, err
	}
	var m Msg
	m.Timestamp, _ = o.Bool("timestamp", false)
	m.GuestName, _ = o.Bool("guest-name", false)
	return m, nil
}
