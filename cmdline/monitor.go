package cmdline

import (
	"errors"
	"fmt"
)

// Mon is a -mon option: a monitor on a chardev.
type Mon struct {
	ID      string
	Chardev string
	Mode    string // always "control": minivmm has QMP only
	Pretty  bool
}

var monParams = withID(monOpts.kinds())

// ParseMon parses the argument of -mon, "chardev=ID,mode=control[,id=X]
// [,pretty=on]". QEMU's default mode is readline (HMP), which minivmm
// does not have, so mode=control is required.
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
	case m.Mode == "readline":
		return Mon{}, errors.New("mode=readline (HMP, the default) is not supported: minivmm has only mode=control (QMP)")
	}
	m.Chardev = chardev
	return m, nil
}
