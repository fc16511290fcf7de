package main

import (
	be "encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"minivmm/block/nbdproto"
	"minivmm/internal/qmptest"
)

// TestNBDMetaContextsLikeQSD sends the same meta context options, byte
// for byte, to qemu-storage-daemon's export of two bitmaps and to
// minivmm's: every reply (type, context id and name, error message) and
// the block status chunks must agree.
func TestNBDMetaContextsLikeQSD(t *testing.T) {
	t.Parallel()
	needTools(t, "qemu-img", "qemu-storage-daemon")
	md := func(export string, queries ...string) []byte {
		p := be.BigEndian.AppendUint32(nil, uint32(len(export)))
		p = append(p, export...)
		p = be.BigEndian.AppendUint32(p, uint32(len(queries)))
		for _, q := range queries {
			p = be.BigEndian.AppendUint32(p, uint32(len(q)))
			p = append(p, q...)
		}
		return p
	}
	list, set := uint32(nbdproto.OptListMetaContext), uint32(nbdproto.OptSetMetaContext)
	type option struct {
		opt  uint32
		data []byte
	}
	options := []option{
		{set, md("r", "base:allocation")}, // before structured replies
		{nbdproto.OptStructuredReply, nil},
		{list, md("r")},
		{list, md("r", "qemu:")},
		{list, md("r", "qemu:dirty-bitmap:")},
		{list, md("r", "base:")},
		{list, md("r", "qemu:dirty-bitmap:b1", "qemu:allocation-depth", "base:allocation")},
		{list, md("r", "qemu:dirty-bitmap:zz", "x:y", "qemu:dirty-bitmap:b1x", "qemu", "base:allocationx")},
		{list, md("r", strings.Repeat("q", 4097), "base:allocation")},
		{list, md("r", "base:allocation", "qemu:dirty-bitmap:b0\x00x")},
		{list, md("r\x00")},
		{list, md(strings.Repeat("r", 4097))},
		{list, md("nope")},
		{list, md("r")[:6]},
		{list, []byte{0, 0, 0, 1, 'r', 0, 0, 0, 1}},
		{list, append(md("r", "qemu:"), 0, 0)[:12]},
		{set, md("r", "qemu:", "qemu:dirty-bitmap:", "base:")},
		{set, md("r", "qemu:dirty-bitmap:b1", "base:allocation", "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b1")},
	}
	play := func(kind string) []string {
		dir := t.TempDir()
		img := filepath.Join(dir, "d.raw")
		mustRun(t, "qemu-img", "create", "-q", "-f", "raw", img, "1M")
		blockdevs := []string{"driver=file,node-name=f,filename=" + img}
		var c *qmptest.Client
		pid := 0
		if kind == "qsd" {
			c = startQSDBlockdevs(t, dir, blockdevs)
		} else {
			_, args := blockdevArgs(blockdevs)
			p := startVMM(t, nil, args...)
			c = qmptest.Dial(t, p.Sock)
			c.Negotiate()
			pid = p.Pid
		}
		defer c.Close()
		sock := filepath.Join(dir, "nbd.sock")
		for _, s := range []struct {
			cmd  string
			args map[string]any
		}{
			{"nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": sock}}}},
			{"block-dirty-bitmap-add", map[string]any{"node": "f", "name": "b0", "granularity": 4096}},
			{"block-dirty-bitmap-add", map[string]any{"node": "f", "name": "b1", "disabled": true}},
			{"block-export-add", map[string]any{"type": "nbd", "id": "r", "node-name": "f", "name": "r", "writable": true,
				"allocation-depth": true, "bitmaps": []any{"b0", map[string]any{"node": "f", "name": "b1"}}}},
		} {
			if r := c.Execute(s.cmd, s.args); r["error"] != nil {
				t.Fatalf("%s: %v", kind, r)
			}
		}
		base := 0
		if pid != 0 {
			base = steadyFds(t, pid)
			// The client's connection is gone from minivmm once closed.
			defer settledFds(t, pid, base, "the raw client")
		}
		nc, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(20 * time.Second))
		read := func(n int) []byte {
			p := make([]byte, n)
			if _, err := io.ReadFull(nc, p); err != nil {
				t.Fatalf("%s: reading %d bytes: %v", kind, n, err)
			}
			return p
		}
		read(18)
		nc.Write([]byte{0, 0, 0, 3})
		var out []string
		for _, o := range options {
			p := be.BigEndian.AppendUint64(nil, nbdproto.OptMagic)
			p = be.BigEndian.AppendUint32(p, o.opt)
			p = be.BigEndian.AppendUint32(p, uint32(len(o.data)))
			nc.Write(append(p, o.data...))
			line := fmt.Sprintf("option %d %q:", o.opt, o.data)
			for {
				h := read(20)
				typ, data := be.BigEndian.Uint32(h[12:]), read(int(be.BigEndian.Uint32(h[16:])))
				if typ == nbdproto.RepMetaContext {
					line += fmt.Sprintf(" [%d %s]", be.BigEndian.Uint32(data), data[4:])
					continue
				}
				line += fmt.Sprintf(" %#x %q", typ, data)
				break
			}
			out = append(out, line)
		}
		// Into transmission on r with b1, base:allocation and b0 set:
		// one block status chunk each, in QEMU's order and ids.
		p := be.BigEndian.AppendUint64(nil, nbdproto.OptMagic)
		p = be.BigEndian.AppendUint32(p, nbdproto.OptGo)
		p = be.BigEndian.AppendUint32(p, 7)
		nc.Write(append(p, 0, 0, 0, 1, 'r', 0, 0))
		for {
			h := read(20)
			read(int(be.BigEndian.Uint32(h[16:])))
			if be.BigEndian.Uint32(h[12:]) == nbdproto.RepAck {
				break
			}
		}
		for _, flags := range []uint16{0, nbdproto.CmdFlagReqOne} {
			r := be.BigEndian.AppendUint32(nil, nbdproto.RequestMagic)
			r = be.BigEndian.AppendUint16(r, flags)
			r = be.BigEndian.AppendUint16(r, nbdproto.CmdBlockStatus)
			r = be.BigEndian.AppendUint64(r, 1)
			r = be.BigEndian.AppendUint64(r, 0)
			r = be.BigEndian.AppendUint32(r, 1<<20)
			nc.Write(r)
			for {
				h := read(20)
				data := read(int(be.BigEndian.Uint32(h[16:])))
				out = append(out, fmt.Sprintf("block status flags %d: chunk flags %d type %d %x", flags, be.BigEndian.Uint16(h[4:]), be.BigEndian.Uint16(h[6:]), data))
				if be.BigEndian.Uint16(h[4:])&nbdproto.ReplyFlagDone != 0 {
					break
				}
			}
		}
		return out
	}
	qsd, vmm := play("qsd"), play("vmm")
	if len(qsd) < len(options)+4 || len(vmm) != len(qsd) {
		t.Fatalf("replies: minivmm %d, qsd %d", len(vmm), len(qsd))
	}
	for i := range qsd {
		if i >= len(vmm) || qsd[i] != vmm[i] {
			got := "(nothing)"
			if i < len(vmm) {
				got = vmm[i]
			}
			t.Errorf("\n  minivmm: %s\n  qsd:     %s", got, qsd[i])
		}
	}
}
