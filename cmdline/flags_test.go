package cmdline

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// testFlags registers a few of minivmm's options.
func testFlags() (*FlagSet, *[]string, *bool) {
	f := NewFlagSet("minivmm")
	addFd := f.StringArray("add-fd", "pass an fd")
	f.StringArray("qmp", "QMP socket")
	f.StringArray("name", "guest name")
	f.StringArray("M", "machine")
	s := f.Bool("S", "start paused")
	f.Bool("nodefaults", "no default devices")
	return f, addFd, s
}

func TestFlagSetParse(t *testing.T) {
	type occ = Occurrence
	for _, tc := range []struct {
		args []string
		want []occ
		err  string // QEMU 7.2's text where it has the case
	}{
		{args: nil},
		{args: []string{"-add-fd", "fd=3,set=2", "-qmp", "unix:/x,server=on,wait=off", "-S", "-nodefaults", "-add-fd", "fd=4,set=2"},
			want: []occ{{"add-fd", "fd=3,set=2"}, {"qmp", "unix:/x,server=on,wait=off"}, {"S", ""}, {"nodefaults", ""}, {"add-fd", "fd=4,set=2"}}},
		{args: []string{"--add-fd", "a", "--add-fd=b", "-add-fd=c,d", "--S", "-M", "none"},
			want: []occ{{"add-fd", "a"}, {"add-fd", "b"}, {"add-fd", "c,d"}, {"S", ""}, {"M", "none"}}},
		{args: []string{"-name", "-foo"}, want: []occ{{"name", "-foo"}}}, // as QEMU: the value may start with '-'
		{args: []string{"-add-fd", "-S"}, want: []occ{{"add-fd", "-S"}}},
		{args: []string{"-name", "--"}, want: []occ{{"name", "--"}}},
		{args: []string{"-name", ""}, want: []occ{{"name", ""}}},
		{args: []string{"-add-fd="}, want: []occ{{"add-fd", ""}}},
		{args: []string{"-S", "--"}, want: []occ{{"S", ""}}},
		{args: []string{"-bogus"}, err: "-bogus: invalid option"},
		{args: []string{"--bogus"}, err: "--bogus: invalid option"},
		{args: []string{"-bogus=1"}, err: "-bogus=1: invalid option"},
		{args: []string{"-S=1"}, err: "-S=1: invalid option"},
		{args: []string{"---S"}, err: "---S: invalid option"},
		{args: []string{"-"}, err: "-: invalid option"},
		{args: []string{"--help"}, err: "--help: invalid option"},
		{args: []string{"-add-fd"}, err: "-add-fd: requires an argument"},
		{args: []string{"-S", "--add-fd"}, err: "--add-fd: requires an argument"},
		{args: []string{"disk.img"}, err: "disk.img: " + ErrPositional.Error()},
		{args: []string{""}, err: ": " + ErrPositional.Error()},
		{args: []string{"-S", "--", "-S"}, err: "-S: " + ErrPositional.Error()},
		{args: []string{"-bogus", "-add-fd"}, err: "-bogus: invalid option"}, // first error first
	} {
		f, _, _ := testFlags()
		err := f.Parse(tc.args)
		if tc.err != "" || err != nil {
			if err == nil || err.Error() != tc.err {
				t.Errorf("Parse(%q) error = %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if got := f.Occurrences(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Parse(%q) occurrences = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestFlagSetValues(t *testing.T) {
	f, addFd, s := testFlags()
	if err := f.Parse([]string{"-add-fd", "fd=3,set=1,opaque=a,,b", "-add-fd", "fd=4,set=1"}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"fd=3,set=1,opaque=a,,b", "fd=4,set=1"}; !reflect.DeepEqual(*addFd, want) {
		t.Errorf("add-fd values = %q, want %q (commas must not split)", *addFd, want)
	}
	if *s {
		t.Error("-S set without being given")
	}
	f, _, _ = testFlags()
	if err := f.Parse([]string{"-x"}); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("unknown option error %v does not wrap ErrInvalidOption", err)
	}
}

func TestOccurrenceWrap(t *testing.T) {
	err := Occurrence{"add-fd", "fd=3,set=2"}.Wrap(ErrFdInvalid)
	var oe *OptionError
	if !errors.As(err, &oe) || !errors.Is(err, ErrFdInvalid) || err.Error() != "-add-fd fd=3,set=2: fd is not valid or already in use" {
		t.Errorf("Wrap gave %v", err)
	}
}

func FuzzFlagSet(f *testing.F) {
	for _, s := range []string{"-add-fd\x00fd=3,set=2\x00-S", "--add-fd=x\x00-name\x00-foo", "-S\x00--\x00x", "-nodefaults\x00-M\x00none", "-add-fd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fs, _, _ := testFlags()
		if err := fs.Parse(strings.Split(s, "\x00")); err != nil {
			return
		}
		// Giving the occurrences back in QEMU's spelling parses the same.
		var args []string
		for _, o := range fs.Occurrences() {
			args = append(args, "-"+o.Name)
			if o.Name != "S" && o.Name != "nodefaults" {
				args = append(args, o.Value)
			}
		}
		again, _, _ := testFlags()
		if err := again.Parse(args); err != nil || !reflect.DeepEqual(fs.Occurrences(), again.Occurrences()) {
			t.Fatalf("%q: %q reparsed as %q (%v)", s, fs.Occurrences(), again.Occurrences(), err)
		}
	})
}
