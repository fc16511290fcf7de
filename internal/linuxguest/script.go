package linuxguest

import (
	"bytes"
	"crypto/md5"
	"fmt"
	"strings"
)

// Pattern is a run of one byte value the guest writes to /dev/vda.
// Offset and Len are multiples of 64 KiB, the guest's dd block size.
type Pattern struct {
	Offset, Len int64
	Byte        byte
}

const ddBlock = 64 << 10

// Sum is the md5 the guest prints for p once read back.
func (p Pattern) Sum() string {
	return fmt.Sprintf("%x", md5.Sum(bytes.Repeat([]byte{p.Byte}, int(p.Len))))
}

// Data is p's contents.
func (p Pattern) Data() []byte { return bytes.Repeat([]byte{p.Byte}, int(p.Len)) }

// WriteScript is a guest script that writes each pattern with O_DIRECT
// and an fsync (a virtio-blk FLUSH), drops the page cache, then reads each
// back twice — with O_DIRECT and through the page cache — printing
// "SUM i direct|cached md5". Then it discards each region in discards
// (blkdiscard, a virtio-blk DISCARD) and prints "DISCARDED i".
func WriteScript(writes []Pattern, discards []Pattern) string {
	var s strings.Builder
	s.WriteString("set -e\n")
	for _, p := range append(append([]Pattern(nil), writes...), discards...) {
		if p.Offset%ddBlock != 0 || p.Len%ddBlock != 0 || p.Len == 0 {
			panic(fmt.Sprintf("linuxguest: pattern %+v not in 64 KiB units", p))
		}
	}
	for _, p := range writes {
		fmt.Fprintf(&s, "dd if=/dev/zero bs=%d count=%d 2>/dev/null | tr '\\000' '\\%03o' | "+
			"dd of=/dev/vda bs=%d seek=%d oflag=direct conv=fsync 2>/dev/null\n",
			ddBlock, p.Len/ddBlock, p.Byte, ddBlock, p.Offset/ddBlock)
	}
	s.WriteString("sync\necho 3 > /proc/sys/vm/drop_caches\n")
	for i, p := range writes {
		fmt.Fprintf(&s, "echo SUM %d direct $(dd if=/dev/vda bs=%d skip=%d count=%d iflag=direct 2>/dev/null | md5sum)\n",
			i, ddBlock, p.Offset/ddBlock, p.Len/ddBlock)
		fmt.Fprintf(&s, "echo SUM %d cached $(dd if=/dev/vda bs=%d skip=%d count=%d 2>/dev/null | md5sum)\n",
			i, ddBlock, p.Offset/ddBlock, p.Len/ddBlock)
	}
	for i, p := range discards {
		fmt.Fprintf(&s, "blkdiscard -o %d -l %d /dev/vda\necho DISCARDED %d\n", p.Offset, p.Len, i)
	}
	s.WriteString("sync\n")
	return s.String()
}

// CheckSums compares the guest's "SUM" lines with the patterns; it
// returns one message per mismatch or missing line.
func CheckSums(r *Result, writes []Pattern) []string {
	got := map[string]string{}
	for _, l := range r.Lines {
		f := strings.Fields(l)
		if len(f) >= 4 && f[0] == "SUM" {
			got[f[1]+" "+f[2]] = f[3]
		}
	}
	var bad []string
	for i, p := range writes {
		for _, how := range []string{"direct", "cached"} {
			k := fmt.Sprintf("%d %s", i, how)
			if got[k] != p.Sum() {
				bad = append(bad, fmt.Sprintf("pattern %d (%#x at %d, %d bytes) read %s: md5 %q, want %s",
					i, p.Byte, p.Offset, p.Len, how, got[k], p.Sum()))
			}
		}
	}
	return bad
}

// ReadLine is a guest script line that reads [off, off+n) with O_DIRECT
// and prints "tag md5"; Value finds the md5.
func ReadLine(tag string, off, n int64) string {
	return fmt.Sprintf("echo %s $(dd if=/dev/vda bs=%d skip=%d count=%d iflag=direct 2>/dev/null | md5sum)\n",
		tag, ddBlock, off/ddBlock, n/ddBlock)
}

// Value is the first word after tag on the script's output line starting
// with tag, or "".
func (r *Result) Value(tag string) string {
	for _, l := range r.Lines {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == tag {
			return f[1]
		}
	}
	return ""
}
