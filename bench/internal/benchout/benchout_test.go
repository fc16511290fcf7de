package benchout

import (
	"strings"
	"testing"
)

func TestParseImgBench(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      ImgBench
		err       string
	}{
		{
			name: "qemu read",
			out: "Sending 200000 read requests, 4096 bytes each, 64 in parallel (starting at offset 0, step size 4096)\n" +
				"Run completed in 2.345 seconds.\n",
			want: ImgBench{Requests: 200000, Size: 4096, Depth: 64, Step: 4096, Seconds: 2.345},
		},
		{
			name: "write with flush notice",
			out: "Sending 1000 write requests, 65536 bytes each, 1 in parallel (starting at offset 4096, step size 1073745920)\n" +
				"Sending flush every 10 requests\n" +
				"Run completed in 0.010 seconds.\n",
			want: ImgBench{Requests: 1000, Write: true, Size: 65536, Depth: 1, Offset: 4096, Step: 1073745920, Seconds: 0.01},
		},
		{
			name: "no run line",
			out:  "Sending 10 read requests, 4096 bytes each, 1 in parallel (starting at offset 0, step size 4096)\nqemu-img: Failed request: Input/output error\n",
			err:  "no \"Run completed\"",
		},
		{name: "error only", out: "qemu-img: Could not open 'x': No such file or directory\n", err: "no \"Sending"},
		{
			name: "too short",
			out:  "Sending 1 read requests, 4096 bytes each, 1 in parallel (starting at offset 0, step size 4096)\nRun completed in 0.000 seconds.\n",
			err:  "too short",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseImgBench([]byte(tc.out))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	r := ImgBench{Requests: 1000, Seconds: 0.5}
	if r.IOPS() != 2000 {
		t.Errorf("IOPS = %v", r.IOPS())
	}
}

func TestParseProcStatus(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Memory
		bad      bool
	}{
		{name: "ok", in: "Name:\tminivmm\nVmPeak:\t  10000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\nThreads:\t5\n",
			want: Memory{RSS: 1 << 20, HWM: 2 << 20}},
		{name: "missing", in: "Name:\tx\nVmRSS:\t1 kB\n", bad: true},
		{name: "garbled", in: "VmRSS:\tlots\nVmHWM:\t1 kB\n", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseProcStatus([]byte(tc.in))
			if tc.bad != (err != nil) {
				t.Fatalf("err = %v", err)
			}
			if !tc.bad && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
