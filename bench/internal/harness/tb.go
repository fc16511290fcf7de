package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// T is a testing.TB for code outside `go test`, so that the report can
// use the test helpers (internal/qmptest starts VMMs and speaks QMP through
// a testing.TB). Fatal and Skip unwind with a panic that [WithT] recovers;
// Cleanup functions run, last first, when WithT returns.
type T struct {
	testing.TB // nil: only the methods below may be called
	name       string
	mu         sync.Mutex
	cleanups   []func()
	failed     bool
	logs       []string
	dirs       int
}

type fatal struct{ msg string }
type skip struct{ msg string }

// WithT calls f with a fresh T and returns the error f failed or skipped
// with (a skip is an error too: the report treats a case that cannot run
// as failed), after running the cleanups.
func WithT(name string, f func(t *T)) (err error) {
	t := &T{name: name}
	defer func() {
		r := recover()
		t.runCleanups()
		switch r := r.(type) {
		case nil:
			if t.failed {
				err = fmt.Errorf("%s failed: %v", name, t.logs)
			}
		case fatal:
			err = fmt.Errorf("%s", r.msg)
		case skip:
			err = fmt.Errorf("skipped: %s", r.msg)
		default:
			buf := make([]byte, 8<<10)
			buf = buf[:runtime.Stack(buf, false)]
			err = fmt.Errorf("panic: %v\n%s", r, buf)
		}
	}()
	f(t)
	return nil
}

func (t *T) runCleanups() {
	for {
		t.mu.Lock()
		if len(t.cleanups) == 0 {
			t.mu.Unlock()
			return
		}
		f := t.cleanups[len(t.cleanups)-1]
		t.cleanups = t.cleanups[:len(t.cleanups)-1]
		t.mu.Unlock()
		f()
	}
}

func (t *T) Name() string { return t.name }
func (t *T) Helper()      {}
func (t *T) Cleanup(f func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cleanups = append(t.cleanups, f)
}
func (t *T) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}
func (t *T) Log(args ...any) { t.Logf("%s", fmt.Sprintln(args...)) }
func (t *T) Logf(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.logs = append(t.logs, fmt.Sprintf(format, args...))
}
func (t *T) Error(args ...any) { t.Errorf("%s", fmt.Sprint(args...)) }
func (t *T) Errorf(format string, args ...any) {
	t.Logf(format, args...)
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}
func (t *T) Fail() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failed = true
}
func (t *T) FailNow()                          { panic(fatal{"FailNow"}) }
func (t *T) Fatal(args ...any)                 { t.Fail(); panic(fatal{fmt.Sprint(args...)}) }
func (t *T) Fatalf(format string, args ...any) { t.Fail(); panic(fatal{fmt.Sprintf(format, args...)}) }
func (t *T) Skip(args ...any)                  { panic(skip{fmt.Sprint(args...)}) }
func (t *T) Skipf(format string, args ...any)  { panic(skip{fmt.Sprintf(format, args...)}) }
func (t *T) SkipNow()                          { panic(skip{"SkipNow"}) }
func (t *T) Skipped() bool                     { return false }
func (t *T) Setenv(key, value string)          { panic(fatal{"Setenv is not supported"}) }
func (t *T) Chdir(dir string)                  { panic(fatal{"Chdir is not supported"}) }
func (t *T) Attr(key, value string)            {}

// TempDir is a new directory removed at cleanup. Its path is short, as a
// unix socket path must be.
func (t *T) TempDir() string {
	dir, err := os.MkdirTemp("", "mvb")
	if err != nil {
		t.Fatalf("TempDir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	t.mu.Lock()
	t.dirs++
	t.mu.Unlock()
	return filepath.Clean(dir)
}
