package cmdline

// OptionError is an error in one command-line option. It reads like
// QEMU's "-add-fd fd=3,set=2: fd is not valid or already in use", so
// that users and scripts see the option as they typed it.
type OptionError struct {
	Option string // name without dashes, e.g. "add-fd"
	Value  string // the option's argument; empty for options without one
	Err    error
}

func (e *OptionError) Error() string {
	if e.Value == "" {
		return "-" + e.Option + ": " + e.Err.Error()
	}
	return "-" + e.Option + " " + e.Value + ": " + e.Err.Error()
}

func (e *OptionError) Unwrap() error { return e.Err }
