package qcow2

import (
	"bytes"
	"compress/flate"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func cluster(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.IntN(8))
	}
	return b
}

func deflateRaw(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func zstdFrames(t *testing.T, parts ...[]byte) []byte {
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var out []byte
	for _, p := range parts {
		out = enc.EncodeAll(p, out)
	}
	return out
}

func TestDecompress(t *testing.T) {
	const cs = 65536
	want := cluster(cs)
	def := deflateRaw(t, want)
	zst := zstdFrames(t, want[:1000], want[1000:40000], want[40000:])
	for _, tc := range []struct {
		name string
		typ  uint8
		src  []byte
		ok   bool
	}{
		{"deflate", compressionDeflate, def, true},
		{"deflate with the next cluster's bytes after it", compressionDeflate, append(append([]byte(nil), def...), 0xde, 0xad, 0xbe, 0xef), true},
		{"deflate padded with zeroes to a sector", compressionDeflate, append(append([]byte(nil), def...), make([]byte, 511)...), true},
		{"deflate cut short", compressionDeflate, def[:len(def)/2], false},
		{"deflate of too little", compressionDeflate, deflateRaw(t, want[:cs-1]), false},
		{"deflate garbage", compressionDeflate, bytes.Repeat([]byte{0xff}, 512), false},
		{"zstd, three frames", compressionZstd, zst, true},
		{"zstd with trailing bytes", compressionZstd, append(append([]byte(nil), zst...), make([]byte, 300)...), true},
		{"zstd cut short", compressionZstd, zst[:len(zst)-10], false},
		{"zstd of too little", compressionZstd, zstdFrames(t, want[:cs/2]), false},
		{"zstd garbage", compressionZstd, bytes.Repeat([]byte{0x28}, 512), false},
		{"unknown type", 7, def, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := make([]byte, cs)
			err := decompress(tc.typ, dst, tc.src)
			if tc.ok && (err != nil || !bytes.Equal(dst, want)) {
				t.Fatalf("decompress: %v (equal: %v)", err, bytes.Equal(dst, want))
			}
			if !tc.ok && err == nil {
				t.Fatal("decompressed what it should not")
			}
			if !tc.ok && tc.typ != 7 && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Logf("error: %v", err)
			}
		})
	}
}

// TestZstdWindowLimit: a frame that declares a window beyond the limit is
// refused rather than allocated for.
func TestZstdWindowLimit(t *testing.T) {
	enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(32<<20), zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var buf bytes.Buffer
	enc.Reset(&buf)
	enc.Write(cluster(1 << 20)) // streamed: the frame declares its window
	enc.Close()
	err = decompress(compressionZstd, make([]byte, 1<<20), buf.Bytes())
	if !errors.Is(err, zstd.ErrDecoderSizeExceeded) && !errors.Is(err, zstd.ErrWindowSizeExceeded) {
		t.Fatalf("a 32 MiB window: %v", err)
	}
}

func TestClusterCache(t *testing.T) {
	c := newClusterCache(1 << 20) // 4 entries
	for i := range 5 {
		c.put(uint64(i+1), []byte{byte(i)})
	}
	if c.get(1) != nil {
		t.Error("oldest entry still held")
	}
	for i := 2; i <= 5; i++ {
		if b := c.get(uint64(i)); b == nil || b[0] != byte(i-1) {
			t.Errorf("entry %d: %v", i, b)
		}
	}
	if c.get(0) != nil {
		t.Error("empty slot matched key 0")
	}
}
