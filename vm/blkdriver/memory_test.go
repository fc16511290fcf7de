package blkdriver

import "testing"

func TestMemoryAllocFree(t *testing.T) {
	m := NewMemory(make([]byte, 1<<16), 0x100000)
	a, err := m.Alloc(100, 16)
	if err != nil || a.GPA != 0x100000 || len(a.B) != 100 {
		t.Fatalf("first: %+v %v", a.GPA, err)
	}
	b, err := m.Alloc(4096, 4096)
	if err != nil || b.GPA%4096 != 0 || b.GPA < a.GPA+100 {
		t.Fatalf("aligned: %#x %v", b.GPA, err)
	}
	b.B[0] = 7
	if _, err := m.Alloc(1<<16, 8); err == nil {
		t.Fatal("allocated more than there is")
	}
	m.Free(a)
	m.Free(b)
	if m.FreeBytes() != 1<<16 {
		t.Fatalf("free %d after freeing all", m.FreeBytes())
	}
	all, err := m.Alloc(1<<16, 1)
	if err != nil {
		t.Fatalf("after coalescing: %v", err)
	}
	if all.B[4096] != 0 {
		t.Fatal("allocation not zeroed")
	}
	for _, bad := range [][2]int{{0, 8}, {8, 3}, {-1, 8}, {8, 0}} {
		if _, err := m.Alloc(bad[0], bad[1]); err == nil {
			t.Errorf("Alloc(%d, %d) accepted", bad[0], bad[1])
		}
	}
}

func TestNeedEvent(t *testing.T) {
	for _, c := range []struct {
		event, new, old uint16
		want            bool
	}{
		{0, 1, 0, true}, {5, 6, 5, true}, {5, 5, 4, false}, {5, 10, 2, true}, {10, 5, 2, false},
		{0xffff, 0, 0xffff, true}, {0xfffe, 0x0001, 0xfff0, true}, {3, 2, 0xfff0, false},
	} {
		if got := needEvent(c.event, c.new, c.old); got != c.want {
			t.Errorf("needEvent(%d, %d, %d) = %v", c.event, c.new, c.old, got)
		}
	}
}
