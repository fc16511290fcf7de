package machine

import (
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"minivmm/vm/blkdriver"
)

// BenchmarkRandRead4k is the device model's cost: 4 KiB random reads of
// a raw image through the whole guest path (driver, rings, device,
// block layer, file), against the block layer alone (node.ReadAt from
// as many goroutines), at depth 1 and 32, in the same run.
func BenchmarkRandRead4k(b *testing.B) {
	const size = 64 << 20
	g := newGraph(b)
	node := addImage(b, g, "disk0", "raw", image(b, "raw", size))
	m := newMachine(b, g, false)
	dev, err := m.AddDevice(DeviceConfig{Driver: "virtio-blk-pci", ID: "vd0", Drive: "disk0", NumQueues: 1, QueueSize: 256})
	if err != nil {
		b.Fatal(err)
	}
	q := dev.Disk().Queues()[0]
	for _, depth := range []int{1, 32} {
		b.Run("block-layer/depth="+strconv.Itoa(depth), func(b *testing.B) {
			parallel(b, depth, func(rng *rand.Rand, buf []byte) {
				if _, err := node.ReadAt(buf, rng.Int64N(size/4096)*4096); err != nil {
					b.Error(err)
				}
			})
		})
		b.Run("virtio-blk/depth="+strconv.Itoa(depth), func(b *testing.B) {
			var mu sync.Mutex
			parallelRegions(b, depth, dev.Disk().Memory(), &mu, func(rng *rand.Rand, r blkdriver.Region) {
				req := &blkdriver.Request{Type: blkdriver.TypeIn, Sector: uint64(rng.Int64N(size/4096) * 8), Data: []blkdriver.Region{r}}
				if err := q.Do(req); err != nil {
					b.Error(err)
				}
			})
		})
	}
}

// parallel runs b.N ops from depth goroutines.
func parallel(b *testing.B, depth int, op func(*rand.Rand, []byte)) {
	var wg sync.WaitGroup
	var next sync.Mutex
	left := b.N
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; i < depth; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 1))
			buf := make([]byte, 4096)
			for {
				next.Lock()
				if left == 0 {
					next.Unlock()
					return
				}
				left--
				next.Unlock()
				op(rng, buf)
			}
		}()
	}
	wg.Wait()
}

func parallelRegions(b *testing.B, depth int, mem *blkdriver.Memory, _ *sync.Mutex, op func(*rand.Rand, blkdriver.Region)) {
	regions := make(chan blkdriver.Region, depth)
	for range depth {
		r, err := mem.Alloc(4096, 4096)
		if err != nil {
			b.Fatal(err)
		}
		regions <- r
		defer mem.Free(r)
	}
	parallel(b, depth, func(rng *rand.Rand, _ []byte) {
		r := <-regions
		op(rng, r)
		regions <- r
	})
}
