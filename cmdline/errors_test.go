package cmdline

import (
	"errors"
	"testing"
)

func TestOptionError(t *testing.T) {
	for _, tc := range []struct {
		e    OptionError
		want string
	}{
		{OptionError{"add-fd", "fd=3,set=2", ErrFdInvalid}, "-add-fd fd=3,set=2: fd is not valid or already in use"},
		{OptionError{"S", "", errors.New("boom")}, "-S: boom"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
		if !errors.Is(&tc.e, tc.e.Err) {
			t.Errorf("%v does not unwrap to %v", &tc.e, tc.e.Err)
		}
	}
}
