package imgtool

import "errors"

// reportedError says whether err is one QEMU prints where it finds it
// (error_report_err), before the message of the command that failed.
func reportedError(err error) bool {
	var r interface{ Reported() bool }
	return errors.As(err, &r) && r.Reported()
}
