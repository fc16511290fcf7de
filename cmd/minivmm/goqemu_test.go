package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
	"golang.org/x/sys/unix"

	"minivmm/internal/fdtest"
)

// TestGoQemuRunWithFile drives minivmm with go-qemu's QMP monitor, which
// passes an fd only to a server whose greeting offers oob, attached to
// the command's own bytes.
func TestGoQemuRunWithFile(t *testing.T) {
	fdtest.Check(t)
	img, _ := clientImages(t)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := startVMM(t, nil)

	// The socket file exists a moment before it listens; go-qemu does
	// not retry, so the test does.
	var mon *qmp.SocketMonitor
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if mon, err = qmp.NewSocketMonitor("unix", p.Sock, 5*time.Second); err == nil {
			break
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	if err := mon.Connect(); err != nil {
		t.Fatal(err)
	}
	connected := true
	defer func() {
		if connected {
			mon.Disconnect()
		}
	}()
	// The baseline is taken with go-qemu connected: the socket file exists
	// once bound, before Go's net package has closed the somaxconn file
	// it reads before listen, and a baseline taken then once counted it
	// (CI: 10, want 11).
	withClient := fdCount(t, p.Pid)
	if mon.Version == nil || mon.Version.String() != "9.1.0" {
		t.Errorf("go-qemu read version %+v, want 9.1", mon.Version)
	}
	run := func(cmd string, file *os.File) map[string]any {
		t.Helper()
		out, err := mon.RunWithFile([]byte(cmd), file)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		var r map[string]any
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("%s: %q: %v", cmd, out, err)
		}
		return r
	}

	r := run(`{"execute": "add-fd", "arguments": {"fdset-id": 2, "opaque": "go-qemu"}}`, f)
	added := r["return"].(map[string]any)
	fd := int64(added["fd"].(float64))
	if added["fdset-id"] != float64(2) {
		t.Errorf("add-fd = %v", r)
	}
	if got := fdTarget(p.Pid, fd); got != img {
		t.Errorf("fd %d in the VMM is %q, want %s", fd, got, img)
	} else if fl := fdinfoFlags(t, p.Pid, int(fd)); fl&unix.O_ACCMODE != unix.O_RDONLY {
		t.Errorf("fd %d flags %o, want O_RDONLY", fd, fl)
	}
	sets, _ := json.Marshal(run(`{"execute": "query-fdsets"}`, nil)["return"])
	want, _ := json.Marshal([]any{map[string]any{"fdset-id": 2, "fds": []any{map[string]any{"fd": fd, "opaque": "go-qemu"}}}})
	if string(sets) != string(want) {
		t.Errorf("query-fdsets = %s, want %s", sets, want)
	}

	// Events reach go-qemu's listener, which must be read concurrently
	// (go-qemu hands events over unbuffered, before the reply).
	events, err := mon.Events(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan qmp.Event, 16)
	go func() {
		for ev := range events {
			select {
			case got <- ev:
			default:
			}
		}
	}()
	run(`{"execute": "stop"}`, nil)
	select {
	case ev := <-got:
		if ev.Event != "STOP" {
			t.Errorf("event %+v, want STOP", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no STOP event")
	}

	run(`{"execute": "remove-fd", "arguments": {"fdset-id": 2}}`, nil)
	if got := fdCount(t, p.Pid); got != withClient {
		t.Errorf("VMM holds %d fds after remove-fd, want %d", got, withClient)
	}
	if err := mon.Disconnect(); err != nil {
		t.Errorf("disconnect: %v", err)
	}
	connected = false
	waitFdCount(t, p.Pid, withClient-1, "the VMM's fds back to the baseline after go-qemu left")
}
