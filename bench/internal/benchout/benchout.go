// Package benchout parses what the benchmarked programs print: the two
// lines of `qemu-img bench` / `minivmm img bench`, and /proc/PID/status.
package benchout

import (
	"bufio"
	"bytes"
	"fmt"
	"regexp"
	"strconv"
)

// ImgBench is what `qemu-img bench` (and `minivmm img bench`, which prints
// the same lines) reports about one run.
type ImgBench struct {
	Requests int64
	Write    bool
	Size     int64 // bytes per request
	Depth    int64 // requests in parallel
	Offset   int64
	Step     int64
	Seconds  float64
}

// IOPS is requests per second.
func (r ImgBench) IOPS() float64 { return float64(r.Requests) / r.Seconds }

var (
	sendingLine = regexp.MustCompile(`(?m)^Sending (\d+) (read|write) requests, (\d+) bytes each, (\d+) in parallel \(starting at offset (\d+), step size (\d+)\)`)
	doneLine    = regexp.MustCompile(`(?m)^Run completed in ([0-9.]+) seconds\.$`)
)

// ParseImgBench parses img bench output: the "Sending ..." line and the
// "Run completed in X seconds." line; other lines (a flush notice, errors
// of a tool that still completed) are ignored.
func ParseImgBench(out []byte) (ImgBench, error) {
	var r ImgBench
	m := sendingLine.FindSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no \"Sending ... requests\" line in %q", bytes.TrimSpace(out))
	}
	nums := make([]int64, 0, 5)
	for _, i := range []int{1, 3, 4, 5, 6} {
		n, err := strconv.ParseInt(string(m[i]), 10, 64)
		if err != nil {
			return r, fmt.Errorf("bad number %q in %q", m[i], m[0])
		}
		nums = append(nums, n)
	}
	r.Requests, r.Size, r.Depth, r.Offset, r.Step = nums[0], nums[1], nums[2], nums[3], nums[4]
	r.Write = string(m[2]) == "write"
	d := doneLine.FindSubmatch(out)
	if d == nil {
		return r, fmt.Errorf("no \"Run completed\" line in %q", bytes.TrimSpace(out))
	}
	s, err := strconv.ParseFloat(string(d[1]), 64)
	if err != nil {
		return r, fmt.Errorf("bad run time %q", d[1])
	}
	if s <= 0 {
		// qemu-img prints three decimals: a run under 0.5 ms reads as
		// 0.000, and no rate can be taken from it.
		return r, fmt.Errorf("run time %q too short to measure; raise -c", d[1])
	}
	r.Seconds = s
	return r, nil
}

// Memory is a process's resident set from /proc/PID/status, in bytes.
type Memory struct {
	RSS int64 // VmRSS: resident now
	HWM int64 // VmHWM: peak resident
}

// ParseProcStatus reads VmRSS and VmHWM from the text of /proc/PID/status.
func ParseProcStatus(status []byte) (Memory, error) {
	var m Memory
	var seen int
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		var dst *int64
		line := sc.Bytes()
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &m.RSS
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &m.HWM
		default:
			continue
		}
		f := bytes.Fields(line[6:])
		if len(f) != 2 || string(f[1]) != "kB" {
			return m, fmt.Errorf("unexpected line %q", line)
		}
		n, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return m, fmt.Errorf("unexpected line %q", line)
		}
		*dst = n << 10
		seen++
	}
	if seen != 2 {
		return m, fmt.Errorf("VmRSS or VmHWM missing from /proc status")
	}
	return m, nil
}
