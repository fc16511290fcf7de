// Package workload is the built-in guest's IO workload: jobs in fio's
// vocabulary (rw, bs, iodepth, numjobs, size, offset, runtime, rwmixread,
// verify) that drive virtio-blk disks through the guest driver and check
// every block they read against what they wrote.
package workload

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Spec is one workload, as fio would describe it.
type Spec struct {
	RW        string        // read, write, randread, randwrite, randrw, rw (= readwrite)
	BS        int64         // block size of each request, a multiple of 512
	IODepth   int           // requests each job keeps in flight
	NumJobs   int           // jobs per device, each on its own vCPU and queue
	Size      int64         // bytes of the device the jobs work on; 0: to its end
	Offset    int64         // where that region starts
	IOSize    int64         // bytes each job transfers when Runtime is 0; 0: Size
	Runtime   time.Duration // run for this long (fio's time_based); 0: IOSize bytes
	RWMixRead int           // percent of reads in rw and randrw
	Verify    bool          // stamp every written block and check every read one
	Seed      uint64        // of the random offsets
	Devices   []string      // the devices to run on; none: all
}

// DefaultSpec is fio's defaults: a sequential read of 4 KiB blocks at depth 1.
func DefaultSpec() Spec {
	return Spec{RW: "read", BS: 4096, IODepth: 1, NumJobs: 1, RWMixRead: 50, Seed: 0x6d696e69766d6d}
}

var rwModes = map[string]string{
	"read": "read", "write": "write", "randread": "randread", "randwrite": "randwrite",
	"randrw": "randrw", "rw": "rw", "readwrite": "rw",
}

// Limits on a spec, so that a typo cannot exhaust guest memory or the
// queues.
const (
	MaxIODepth = 1024
	MaxNumJobs = 64
	MaxBS      = 16 << 20
)

// Random tells whether the offsets are random.
func (s Spec) Random() bool { return strings.HasPrefix(s.RW, "rand") }

// Reads and Writes tell which directions the workload has.
func (s Spec) Reads() bool  { return s.RW != "write" && s.RW != "randwrite" }
func (s Spec) Writes() bool { return s.RW != "read" && s.RW != "randread" }

// Parse reads a workload spec: "key=value,..." as QEMU's options are
// written (",," is a comma in a value), keys in fio's spelling, with or
// without fio's leading "--"; whitespace separates too, so that a line
// of fio options works. An unknown key or a bad value is an error that
// names it.
func Parse(s string) (Spec, error) {
	sp := DefaultSpec()
	mixWrite := -1
	for _, kv := range split(s) {
		key, val, hasVal := strings.Cut(kv, "=")
		key = strings.TrimPrefix(key, "--")
		if !hasVal && key != "time_based" {
			return Spec{}, fmt.Errorf("workload: '%s' is not key=value", kv)
		}
		var err error
		switch key {
		case "rw", "readwrite":
			m, ok := rwModes[val]
			if !ok {
				err = errors.New("expects read, write, randread, randwrite, randrw or rw")
			}
			sp.RW = m
		case "bs", "blocksize":
			sp.BS, err = parseSize(val)
			if err == nil && (sp.BS <= 0 || sp.BS%512 != 0 || sp.BS > MaxBS) {
				err = fmt.Errorf("expects a multiple of 512 up to %d", MaxBS)
			}
		case "iodepth":
			sp.IODepth, err = parseInt(val, 1, MaxIODepth)
		case "numjobs":
			sp.NumJobs, err = parseInt(val, 1, MaxNumJobs)
		case "size":
			sp.Size, err = parseSize(val)
		case "offset":
			sp.Offset, err = parseSize(val)
		case "io_size", "io_limit":
			sp.IOSize, err = parseSize(val)
		case "runtime":
			sp.Runtime, err = parseDuration(val)
		case "time_based":
			if hasVal {
				_, err = parseBool(val)
			}
		case "rwmixread":
			sp.RWMixRead, err = parseInt(val, 0, 100)
		case "rwmixwrite":
			mixWrite, err = parseInt(val, 0, 100)
		case "verify":
			switch val {
			case "crc32c", "crc32c-intel", "meta", "pattern":
				sp.Verify = true
			default:
				sp.Verify, err = parseBool(val)
			}
		case "randseed", "seed":
			sp.Seed, err = strconv.ParseUint(val, 0, 64)
		case "device", "drive", "filename":
			for _, id := range strings.Split(val, ":") {
				if !wellFormedID(id) {
					err = fmt.Errorf("expects device ids separated by ':', not '%s'", val)
					break
				}
				sp.Devices = append(sp.Devices, id)
			}
		default:
			return Spec{}, fmt.Errorf("workload: unknown parameter '%s'", key)
		}
		if err != nil {
			return Spec{}, fmt.Errorf("workload: parameter '%s': %v", key, err)
		}
	}
	if mixWrite >= 0 {
		sp.RWMixRead = 100 - mixWrite
	}
	return sp, nil
}

// split cuts s at lone commas and at whitespace; ",," is a comma.
func split(s string) []string {
	var out []string
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			out = append(out, b.String())
			b.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ',' && i+1 < len(s) && s[i+1] == ',':
			b.WriteByte(',')
			i++
		case c == ',' || c == ' ' || c == '\t' || c == '\n':
			flush()
		default:
			b.WriteByte(c)
		}
	}
	flush()
	return out
}

func parseInt(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("expects an integer from %d to %d", lo, hi)
	}
	return n, nil
}

func parseBool(s string) (bool, error) {
	switch s {
	case "on", "1", "yes", "true":
		return true, nil
	case "off", "0", "no", "false":
		return false, nil
	}
	return false, errors.New("expects on or off")
}

// parseSize reads fio's sizes: a number with an optional k, m, g or t
// suffix (powers of 1024, as fio's default kb_base; "KiB" spellings too).
func parseSize(s string) (int64, error) {
	t := strings.ToLower(s)
	t = strings.TrimSuffix(strings.TrimSuffix(t, "ib"), "b")
	mul := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mul = 1 << 10
		case 'm':
			mul = 1 << 20
		case 'g':
			mul = 1 << 30
		case 't':
			mul = 1 << 40
		}
		if mul > 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mul {
		return 0, fmt.Errorf("expects a size, not '%s'", s)
	}
	return n * mul, nil
}

// parseDuration reads fio's times: seconds by default, or with a unit
// Go's time package knows ("500ms", "2m").
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > 1<<30 {
			return 0, errors.New("expects a time")
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("expects a time, not '%s'", s)
	}
	return d, nil
}

// String renders s in the syntax Parse reads.
func (s Spec) String() string {
	b := fmt.Sprintf("rw=%s,bs=%d,iodepth=%d,numjobs=%d", s.RW, s.BS, s.IODepth, s.NumJobs)
	if s.Size > 0 {
		b += fmt.Sprintf(",size=%d", s.Size)
	}
	if s.Offset > 0 {
		b += fmt.Sprintf(",offset=%d", s.Offset)
	}
	if s.IOSize > 0 {
		b += fmt.Sprintf(",io_size=%d", s.IOSize)
	}
	if s.Runtime > 0 {
		b += ",runtime=" + s.Runtime.String()
	}
	if s.RW == "rw" || s.RW == "randrw" {
		b += fmt.Sprintf(",rwmixread=%d", s.RWMixRead)
	}
	if s.Verify {
		b += ",verify=on"
	}
	if len(s.Devices) > 0 {
		b += ",device=" + strings.Join(s.Devices, ":")
	}
	return b
}

// wellFormedID is QEMU's rule for ids: a letter, then letters, digits,
// '-', '.' and '_'.
func wellFormedID(id string) bool {
	for i, c := range id {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_')) {
			return false
		}
	}
	return id != ""
}
