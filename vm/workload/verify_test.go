package workload

import (
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	const off = 8192
	good := make([]byte, 1024)
	stamp(good, off, 5)
	mutate := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	other := make([]byte, 1024)
	stamp(other, off+4096, 5) // written for elsewhere
	old := make([]byte, 1024)
	stamp(old, off, 3)
	for _, c := range []struct {
		name               string
		b                  []byte
		committed, pending uint32
		kind               string // "" ok
		verified           bool
	}{
		{"matches", good, 5, 0, "", true},
		{"new generation of a write in flight", good, 3, 5, "", true},
		{"old generation of a write in flight", old, 3, 5, "", true},
		{"lost write", old, 5, 0, "lost", true},
		{"misplaced", other, 5, 0, "misplaced", true},
		{"flipped byte", mutate(func(b []byte) { b[700] ^= 1 }), 5, 0, "corrupt", true},
		{"torn", append(append([]byte(nil), good[:512]...), old[512:]...), 5, 0, "lost", true},
		{"zeroes", make([]byte, 1024), 5, 0, "unstamped", true},
		{"unknown and unstamped", make([]byte, 1024), 0, 0, "", false},
		{"unknown, stamped here", old, 0, 0, "", true},
		{"unknown, stamped elsewhere", other, 0, 0, "misplaced", true},
		{"unknown, flipped", mutate(func(b []byte) { b[30] ^= 0x80 }), 0, 0, "corrupt", true},
		{"unknown, write in flight, old zeroes", make([]byte, 1024), 0, 5, "", false},
		{"unknown, write in flight, new", good, 0, 5, "", true},
		{"unknown, write in flight, misplaced", other, 0, 5, "misplaced", true},
	} {
		var kinds []string
		for s := 0; s < len(c.b); s += stampSize {
			m, ok, verified := check(c.b[s:s+stampSize], off+int64(s), c.committed, c.pending)
			if verified != c.verified {
				t.Errorf("%s: sector %d verified=%v", c.name, s/stampSize, verified)
			}
			if !ok {
				if m.Offset != off+int64(s) {
					t.Errorf("%s: mismatch at offset %d, want %d", c.name, m.Offset, off+s)
				}
				if m.String() == "" {
					t.Errorf("%s: empty message", c.name)
				}
				kinds = append(kinds, m.Kind)
			}
		}
		switch {
		case c.kind == "" && len(kinds) > 0:
			t.Errorf("%s: mismatches %v", c.name, kinds)
		case c.kind != "" && (len(kinds) == 0 || kinds[len(kinds)-1] != c.kind):
			t.Errorf("%s: mismatches %v, want one of kind %s", c.name, kinds, c.kind)
		}
	}
}

func TestShadowOrdersRequests(t *testing.T) {
	s := NewShadow()
	g1 := s.TryWrite(0, 8)
	if g1 == 0 {
		t.Fatal("first write refused")
	}
	if s.TryWrite(4, 8) != 0 {
		t.Fatal("overlapping write admitted while one is in flight")
	}
	exp := make([][2]uint32, 8)
	s.Read(0, 8, exp)
	if exp[0] != [2]uint32{0, g1} {
		t.Fatalf("read during write expects %v", exp[0])
	}
	s.EndWrite(0, 8, true)
	if s.TryWrite(0, 1) != 0 {
		t.Fatal("write admitted over a read in flight")
	}
	s.EndRead(0, 8)
	done := make(chan struct{})
	got := make(chan uint32)
	s.Read(2, 1, exp)
	go func() { got <- s.Write(0, 4, done) }()
	select {
	case <-got:
		t.Fatal("Write did not wait for the read")
	case <-time.After(20 * time.Millisecond):
	}
	s.EndRead(2, 1)
	if g := <-got; g <= g1 {
		t.Fatalf("generation %d after %d", g, g1)
	}
	s.EndWrite(0, 4, false)
	s.Read(0, 8, exp)
	if exp[0] != [2]uint32{0, 0} || exp[5] != [2]uint32{g1, 0} {
		t.Fatalf("after a failed write: %v", exp)
	}
	s.EndRead(0, 8)
}

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 100000; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.9, 90 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d > 0.02 || d < -0.02 {
			t.Errorf("p%v = %v, want %v", c.q*100, got, c.want)
		}
	}
	var m hist
	m.merge(&h)
	m.add(time.Nanosecond)
	if m.min != 1 || m.max != int64(100*time.Millisecond) || m.n != 100001 {
		t.Errorf("merged: min %d max %d n %d", m.min, m.max, m.n)
	}
	for v := int64(0); v < 1<<20; v = v*3/2 + 1 {
		if b := bucketValue(bucket(v)); float64(b-v) > float64(v)/60+1 || float64(v-b) > float64(v)/60+1 {
			t.Errorf("value %d falls in bucket %d of value %d", v, bucket(v), b)
		}
	}
}
