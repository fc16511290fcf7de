package engine

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/qemuopen"
)

// benchChain makes base <- mid <- top (size bytes each) as the bench
// case does: mid holds data bytes of a pattern, base and top 4 MiB at
// either end; it returns the graph and the three nodes (base and mid
// read-only, top writable).
func benchChain(b *testing.B, size, data int64) (g *block.Graph, base, mid, top *block.Node, dir string) {
	b.Helper()
	dir = b.TempDir()
	mk := func(name, backing string) {
		f, err := os.Create(filepath.Join(dir, name+".qcow2"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		co := qcow2.CreateOptions{Size: uint64(size)}
		if backing != "" {
			co.BackingFile, co.BackingFormat = backing+".qcow2", "qcow2"
		}
		if err := qcow2.Create(qcow2.FdTarget(int(f.Fd())), co); err != nil {
			b.Fatal(err)
		}
	}
	mk("base", "")
	mk("mid", "base")
	mk("top", "mid")
	reg := qemuopen.New(qemuopen.Config{})
	g = block.NewGraph(reg)
	b.Cleanup(func() { g.Close(); reg.CloseAll() })
	open := func(name string, o block.Options) *block.Node {
		o["driver"] = "qcow2"
		o["node-name"] = name
		o["file"] = block.Options{"driver": "file", "filename": filepath.Join(dir, name+".qcow2")}
		n, err := g.Add(o)
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	fill := func(n *block.Node, off, l int64) {
		w, err := g.Attach("", n, block.Perm{Write: true})
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		for o := off; o < off+l; o += int64(len(buf)) {
			for i := range buf {
				buf[i] = byte((int64(i)*7+o>>20)%255 + 1)
			}
			if _, err := n.WriteAt(buf[:min(int64(len(buf)), off+l-o)], o); err != nil {
				b.Fatal(err)
			}
		}
		if err := n.Flush(); err != nil {
			b.Fatal(err)
		}
		g.Detach(w)
	}
	base = open("base", block.Options{"read-only": false})
	fill(base, 0, 4<<20)
	mid = open("mid", block.Options{"read-only": false, "backing": "base"})
	fill(mid, 0, data)
	top = open("top", block.Options{"read-only": false, "backing": "mid"})
	fill(top, size-(4<<20), 4<<20)
	return g, base, mid, top, dir
}

const benchSize, benchData = 128 << 20, 96 << 20

// BenchmarkStream streams mid into top (base-node base), as the bench
// case's block-stream does; bytes are mid's data.
func BenchmarkStream(b *testing.B) {
	b.SetBytes(benchData)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		g, base, _, top, _ := benchChain(b, benchSize, benchData)
		w, err := g.Attach("", top, block.Perm{Write: true})
		if err != nil {
			b.Fatal(err)
		}
		end := top.Serialise()
		b.StartTimer()
		if err := Stream(context.Background(), top, base, Options{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		end()
		g.Detach(w)
		g.Close()
	}
}

// BenchmarkCommit commits mid into base.
func BenchmarkCommit(b *testing.B) {
	b.SetBytes(benchData)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		g, base, mid, _, _ := benchChain(b, benchSize, benchData)
		w, err := g.Attach("", base, block.Perm{Write: true})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := Commit(context.Background(), mid, base, false, Options{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		g.Detach(w)
		g.Close()
	}
}

// BenchmarkMirrorChain mirrors top (sync full) into a new image.
func BenchmarkMirrorChain(b *testing.B) {
	b.SetBytes(benchData)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		g, _, _, top, dir := benchChain(b, benchSize, benchData)
		dst := newTarget(b, g, dir, "target", top.Length())
		m, err := NewMirror(top, dst, MirrorOptions{Sync: SyncFull, Stop: func() bool { return true }})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		release, err := m.Run(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		release()
		b.StopTimer()
		m.Close()
		g.Close()
	}
}
