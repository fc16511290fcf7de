package qcow2

import (
	"encoding/binary"
	"strings"
	"testing"
)

// area encodes extensions as they follow the header, with an end marker.
func area(exts ...extension) []byte {
	var b []byte
	for _, e := range exts {
		b = binary.BigEndian.AppendUint32(b, e.Type)
		b = binary.BigEndian.AppendUint32(b, uint32(len(e.Data)))
		b = append(b, e.Data...)
		b = append(b, make([]byte, (8-len(e.Data)%8)%8)...)
	}
	return append(b, make([]byte, 8)...)
}

func TestParseExtensions(t *testing.T) {
	h := &header{Version: 3, ClusterBits: 16}
	b := area(
		extension{Type: extBackingFormat, Data: []byte("qcow2")},
		extension{Type: 0x11111111, Data: []byte("unknown one")},
		featureTable(feature{0, 0, "dirty bit"}, feature{2, 1, "raw external data"}),
		extension{Type: extDataFile, Data: []byte("data.img")},
		extension{Type: 0x22222222},
	)
	b = append(b, area(extension{Type: 0x33333333, Data: []byte("after the end")})...)
	x, err := parseExtensions(h, b, false)
	if err != nil {
		t.Fatal(err)
	}
	if x.BackingFormat != "qcow2" || !x.HasBackingFmt || x.DataFile != "data.img" || !x.HasDataFile {
		t.Errorf("parsed %+v", x)
	}
	if len(x.All) != 5 || x.All[1].Type != 0x11111111 || string(x.All[1].Data) != "unknown one" || x.All[4].Type != 0x22222222 {
		t.Errorf("kept %+v", x.All)
	}
	if len(x.Features) != 2 || x.Features[1] != (feature{2, 1, "raw external data"}) {
		t.Errorf("features %+v", x.Features)
	}
}

func TestFeatureTable(t *testing.T) {
	long := strings.Repeat("n", 46) // fills the name field: no NUL
	data := featureTable(feature{0, 7, long}, feature{0, 8, ""}, feature{0, 9, "after the end"}).Data
	fs := parseFeatures(data)
	if len(fs) != 1 || fs[0].Name != long {
		t.Fatalf("features %+v", fs)
	}
	// A table shorter than an entry (what iotest 036 writes) reads as
	// zero-padded, as QEMU reads it.
	short := parseFeatures([]byte("\x00\x3fTest feature"))
	if len(short) != 1 || short[0] != (feature{0, 63, "Test feature"}) {
		t.Fatalf("short table: %+v", short)
	}
	for _, tc := range []struct {
		table []feature
		mask  uint64
		want  string
	}{
		{short, 1<<63 | 1<<62 | 1<<61, "Unsupported qcow2 feature(s): Test feature, Unknown incompatible feature: 6000000000000000"},
		{fs, 1 << 7, "Unsupported qcow2 feature(s): " + long},
		{fs, 1<<7 | 1<<9, "Unsupported qcow2 feature(s): " + long + ", Unknown incompatible feature: 200"},
		{[]feature{{1, 7, "compatible"}, {0, 70, "bad bit"}}, 1 << 7, "Unsupported qcow2 feature(s): Unknown incompatible feature: 80"},
		{nil, 1<<5 | 1<<6, "Unsupported qcow2 feature(s): Unknown incompatible feature: 60"},
	} {
		if got := unsupportedFeatures(tc.table, tc.mask).Error(); got != tc.want {
			t.Errorf("got %q\nwant %q", got, tc.want)
		}
	}
}
