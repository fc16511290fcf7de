package block_test

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"minivmm/block"
)

// TestLimitsFollowReopen: a reopen to cache.direct=on gives the file
// node O_DIRECT's alignment, and one back takes it away; requests
// through a raw node above, unaligned, keep their data either way.
func TestLimitsFollowReopen(t *testing.T) {
	g, _ := fixture(t)
	path := image(t, 1<<20)
	n, err := g.Add(opts(t, `{"driver":"raw","node-name":"r","file":{"driver":"file","node-name":"f","filename":%q}}`, path))
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(b)
	f := n.Child("file")
	for i, direct := range []bool{true, false, true} {
		err := g.Reopen([]block.Options{opts(t, `{"driver":"file","node-name":"f","filename":%q,"cache":{"direct":%v}}`, path, direct)})
		if direct && errors.Is(err, unix.EINVAL) {
			t.Skipf("no O_DIRECT here: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		a := f.Limits().RequestAlignment
		if direct && (a < 512 || a&(a-1) != 0) || !direct && a != 1 {
			t.Fatalf("cache.direct=%v: file alignment %d", direct, a)
		}
		if ra := n.Limits().RequestAlignment; ra != 1 {
			t.Fatalf("raw node took its child's alignment %d (QEMU does not merge it)", ra)
		}
		p := bytes.Repeat([]byte{byte(0x40 + i)}, 777)
		off := int64(4096*i + 333)
		if _, err := b.WriteAt(p, off); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 779)
		if _, err := b.ReadAt(got, off-1); err != nil {
			t.Fatal(err)
		}
		if got[0] != 0 || got[778] != 0 || !bytes.Equal(got[1:778], p) {
			t.Fatalf("cache.direct=%v: read back %x", direct, got)
		}
	}
}
