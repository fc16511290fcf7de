package qtool

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
	_ "minivmm/block/drivers"
)

func TestGetopt(t *testing.T) {
	t.Parallel()
	long := []LongOption{Opt("format", true, 'f'), Opt("force-share", false, 'U'), Opt("force", false, 'F')}
	for _, tc := range []struct {
		args     []string
		opts     string // what Next returned, as "c=arg;"
		operands []string
		errs     string
	}{
		{[]string{"-rn", "-P0xab", "x", "-f", "raw", "y"}, "r=;n=;P=0xab;f=raw;", []string{"x", "y"}, ""},
		{[]string{"--form=qcow2", "--force-share", "--", "-U"}, "f=qcow2;U=;", []string{"-U"}, ""},
		{[]string{"--forc"}, "?=;", nil, "p: option '--forc' is ambiguous; possibilities: '--force-share' '--force'\n"},
		{[]string{"-z"}, "?=;", nil, "p: invalid option -- 'z'\n"},
		{[]string{"-f"}, "?=;", nil, "p: option requires an argument -- 'f'\n"},
		{[]string{"--force-share=1"}, "?=;", nil, "p: option '--force-share' doesn't allow an argument\n"},
		{[]string{"-add-fd=fd=3,set=1", "-add-fd", "x"}, "A=fd=3,set=1;A=x;", nil, ""},
	} {
		var errs strings.Builder
		g := &Getopt{Prog: "p", Args: tc.args, Short: "rnP:f:U", Long: long, Dash: []LongOption{Opt("add-fd", true, 'A')}, Stderr: &errs}
		var got strings.Builder
		for {
			c, arg := g.Next()
			if c == 0 {
				break
			}
			fmt.Fprintf(&got, "%c=%s;", c, arg)
			if c == '?' {
				break
			}
		}
		if got.String() != tc.opts || errs.String() != tc.errs || tc.operands != nil && !reflect.DeepEqual(g.Operands, tc.operands) {
			t.Errorf("%q: options %q operands %q errors %q", tc.args, got.String(), g.Operands, errs.String())
		}
	}
}

// FuzzGetopt: any arguments end in a finite run of options, without a
// panic, every argument accounted for.
func FuzzGetopt(f *testing.F) {
	for _, s := range []string{"-rn\x00-P0xab\x00x", "--form=1\x00--\x00-U", "-f", "--f\x00-add-fd", "-:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		g := &Getopt{Prog: "p", Args: args, Short: "rnP:f:U:", Long: []LongOption{Opt("format", true, 'f'), Opt("force", false, 'F')},
			Dash: []LongOption{Opt("add-fd", true, 'A')}, Stderr: &strings.Builder{}}
		for i := 0; ; i++ {
			if i > 2*len(s)+2 {
				t.Fatalf("%q: no end to the options", args)
			}
			if c, _ := g.Next(); c == 0 || c == '?' {
				break
			}
		}
		if len(g.Operands) > len(args) {
			t.Fatalf("%q: more operands than arguments: %q", args, g.Operands)
		}
	})
}

func TestCloseMessages(t *testing.T) {
	t.Parallel()
	err := errors.Join(
		&block.Error{Node: "#block123", Op: "close", Err: unix.EIO},
		errors.Join(&block.Error{Node: "disk", Op: "drop writer", Err: errors.New("qcow2: could not write the header")}),
	)
	want := []string{
		"Failed to close the image: Input/output error",
		"Failed to close node 'disk': qcow2: could not write the header",
	}
	if got := CloseMessages(err); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	// Close steps a driver names are a line each, without the nodes.
	steps := &block.Error{Node: "#block9", Op: "drop writer", Err: errors.Join(
		&testStep{"Failed to flush the L2 table cache", fmt.Errorf("qcow2: an earlier flush failed: %w", unix.EIO)},
		&testStep{"Failed to flush the refcount block cache", unix.ENOSPC})}
	want = []string{
		"Failed to flush the L2 table cache: Input/output error",
		"Failed to flush the refcount block cache: No space left on device",
	}
	if got := CloseMessages(steps); !reflect.DeepEqual(got, want) {
		t.Errorf("steps: got %q, want %q", got, want)
	}
	if got := CloseMessages(nil); got != nil {
		t.Errorf("nil: %q", got)
	}
}

func TestOptionsFromFlags(t *testing.T) {
	t.Parallel()
	f := &OpenFlags{File: "x", Format: "raw", ReadOnly: true, NoCache: true, Unmap: true, ForceShare: true}
	o, err := f.Options(block.NewGraph(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := block.Options{"driver": "raw", "file": block.Options{"driver": "file", "filename": "x"}, "read-only": true,
		"cache": block.Options{"direct": true, "no-flush": false}, "discard": "unmap", "force-share": true}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("got %v, want %v", o, want)
	}
	f = &OpenFlags{File: "driver=raw,force-share=off,file.driver=file,file.filename=x", ImageOpts: true, ForceShare: true}
	if _, err := f.Options(block.NewGraph(nil)); !errors.Is(err, ErrForceShareConflict) {
		t.Errorf("-U with force-share=off: %v", err)
	}
	for mode, want := range map[string][3]bool{"none": {true, false, false}, "directsync": {true, false, true},
		"writeback": {false, false, false}, "unsafe": {false, true, false}, "writethrough": {false, false, true}} {
		var f OpenFlags
		wt, ok := f.SetCacheMode(mode)
		if !ok || [3]bool{f.NoCache, f.NoFlush, wt} != want {
			t.Errorf("%s: %v %v %v", mode, f.NoCache, f.NoFlush, wt)
		}
	}
	if _, ok := (&OpenFlags{}).SetCacheMode("bogus"); ok {
		t.Error("bogus cache mode taken")
	}
}

type testStep struct {
	step string
	err  error
}

func (s *testStep) Error() string     { return s.step + ": " + s.err.Error() }
func (s *testStep) Unwrap() error     { return s.err }
func (s *testStep) CloseStep() string { return s.step }
