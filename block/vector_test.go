package block_test

import (
	"bytes"
	"testing"

	"minivmm/block"
)

// TestVectoredIO: a vectored write and a vectored read with other buffer
// boundaries agree with plain reads, on a file node (preadv/pwritev), raw
// over it (passed down), and a format without vectored IO (one request
// per buffer), with and without FUA.
func TestVectoredIO(t *testing.T) {
	drv, _ := registerProbe(t, nil)
	for _, o := range []string{
		`{"driver":"file","filename":%q}`,
		`{"driver":"raw","offset":512,"file":{"driver":"file","filename":%q}}`,
		`{"driver":"` + drv + `","file":{"driver":"file","filename":%q}}`,
	} {
		for _, flags := range []block.WriteFlags{0, block.FUA} {
			g, _ := fixture(t)
			n, err := g.Add(opts(t, o, image(t, 1<<16)))
			if err != nil {
				t.Fatal(err)
			}
			b, err := g.Attach("", n, block.Perm{Write: true})
			if err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 3000)
			for i := range want {
				want[i] = byte(i*7 + 1)
			}
			c, err := n.WriteV([][]byte{want[:100], want[100:100], want[100:2048], want[2048:]}, 1000, flags)
			if err != nil || c != len(want) {
				t.Fatalf("%s: WriteV: %d, %v", o, c, err)
			}
			got := make([]byte, len(want))
			c, err = n.ReadV([][]byte{got[:1], got[1:1500], got[1500:]}, 1000)
			if err != nil || c != len(got) || !bytes.Equal(got, want) {
				t.Fatalf("%s: ReadV: %d, %v, data equal %v", o, c, err, bytes.Equal(got, want))
			}
			plain := make([]byte, len(want))
			if _, err := n.ReadAt(plain, 1000); err != nil || !bytes.Equal(plain, want) {
				t.Fatalf("%s: ReadAt after WriteV: %v", o, err)
			}
			if n.InFlight() != 0 {
				t.Fatalf("%s: %d requests in flight after they returned", o, n.InFlight())
			}
			g.Detach(b)
		}
	}
}

// TestFUAFallbackFlushes: a driver that cannot force a write alone gets
// a flush after a FUA write, unless cache.no-flush.
func TestFUAFallbackFlushes(t *testing.T) {
	drv, flushes := registerProbe(t, nil)
	for _, tc := range []struct {
		noFlush bool
		flags   block.WriteFlags
		want    int32
	}{{false, block.FUA, 1}, {false, 0, 0}, {true, block.FUA, 0}} {
		g, _ := fixture(t)
		n, err := g.Add(opts(t, `{"driver":%q,"cache":{"no-flush":%v},"file":{"driver":"file","filename":%q}}`, drv, tc.noFlush, image(t, 4096)))
		if err != nil {
			t.Fatal(err)
		}
		b, err := g.Attach("", n, block.Perm{Write: true})
		if err != nil {
			t.Fatal(err)
		}
		flushes.Store(0)
		if _, err := n.WriteV([][]byte{make([]byte, 512)}, 0, tc.flags); err != nil {
			t.Fatal(err)
		}
		if got := flushes.Load(); got != tc.want {
			t.Errorf("no-flush %v flags %v: %d flushes, want %d", tc.noFlush, tc.flags, got, tc.want)
		}
		g.Detach(b)
	}
}
