package workload

import (
	"math/bits"
	"time"
)

// hist is a log-linear latency histogram: exact below 64 ns, then 64
// buckets per power of two (under 1.6% error), in constant memory.
type hist struct {
	counts   []int64
	n        int64
	sum      int64
	min, max int64
}

const subBits = 6

func bucket(v int64) int {
	if v < 1<<subBits {
		return int(max(v, 0))
	}
	e := bits.Len64(uint64(v)) - subBits - 1
	return (1 << subBits) + e<<subBits + int(v>>e) - 1<<subBits
}

// bucketValue is the middle of a bucket's range.
func bucketValue(i int) int64 {
	if i < 1<<subBits {
		return int64(i)
	}
	e := (i - 1<<subBits) >> subBits
	m := int64((i-1<<subBits)&(1<<subBits-1)) + 1<<subBits
	return m<<e + (int64(1)<<e)/2
}

func (h *hist) add(d time.Duration) {
	v := int64(d)
	b := bucket(v)
	if b >= len(h.counts) {
		h.counts = append(h.counts, make([]int64, b+1-len(h.counts))...)
	}
	h.counts[b]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += v
}

func (h *hist) merge(o *hist) {
	if o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]int64, len(o.counts)-len(h.counts))...)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// quantile is the latency q (0..1) of the requests are at or under.
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := int64(q*float64(h.n) + 0.5)
	rank = min(max(rank, 1), h.n)
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(max(bucketValue(i), h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
