package engine

import (
	"context"
	"testing"
)

// BenchmarkMirror copies the test chain (8 MiB, 6 MiB of it data) into a
// new qcow2 image per iteration, with no writer: the engine's own cost.
func BenchmarkMirror(b *testing.B) {
	b.SetBytes(8 << 20)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		g, top, _, dir := chain(b)
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
