package block_test

import (
	"testing"
	"time"

	"minivmm/block"
)

// TestSerialise: while a range of a serialising node is held, writes
// that touch it (write, write-zeroes, discard) wait for its release and
// writes beside it do not; a write marked Serialised, the holder's own,
// does not wait; after the end, writes take no range at all.
func TestSerialise(t *testing.T) {
	g, _ := fixture(t)
	n, err := g.Add(opts(t, `{"driver":"file","filename":%q}`, image(t, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Detach(b)
	end := n.Serialise()
	unlock := n.SerialiseRange(64<<10, 64<<10)
	buf := make([]byte, 4096)
	done := func(f func() error) chan error {
		ch := make(chan error, 1)
		go func() { ch <- f() }()
		return ch
	}
	blocked := []chan error{
		done(func() error { _, err := n.WriteAt(buf, 64<<10+4096); return err }),
		done(func() error { return n.WriteZeroes(100<<10, 4096, false) }),
		done(func() error { return n.Discard(60<<10, 8192) }),
	}
	if err := <-done(func() error { _, err := n.WriteAt(buf, 0); return err }); err != nil {
		t.Fatal(err)
	}
	if _, err := n.WriteV([][]byte{buf}, 64<<10, block.Serialised); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-blocked[0]:
		t.Fatalf("a write into the held range went through (%v)", err)
	case err := <-blocked[1]:
		t.Fatalf("write-zeroes into the held range went through (%v)", err)
	case err := <-blocked[2]:
		t.Fatalf("a discard over the held range went through (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	unlock()
	for _, ch := range blocked {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	end()
	unlock = n.SerialiseRange(0, 4096) // not serialising: writes ignore it
	if _, err := n.WriteAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	unlock()
}
