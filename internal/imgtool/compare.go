package imgtool

// minivmm img compare: qemu-img compare over minivmm's block layer.

import (
	"fmt"

	"minivmm/block"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["compare"] = imgCommand{run: runImgCompare,
		usage: "compare [-f fmt] [-F fmt] [-s] [-p] [-U] [--image-opts] filename1 filename2"}
}

// compareBufSize is qemu-img's IO_BUF_SIZE.
const compareBufSize = 2 << 20

// sectorMismatch is qemu-img's compare_buffers: whether the first
// 512-byte sector differs, and how many bytes (whole sectors) share
// that answer.
func sectorMismatch(a, b []byte) (bool, int) {
	n := len(a)
	i := min(n, 512)
	res := string(a[:i]) != string(b[:i])
	for i < n {
		l := min(n-i, 512)
		if (string(a[i:i+l]) != string(b[i:i+l])) != res {
			break
		}
		i += l
	}
	return res, i
}

// firstNonzeroSector is qemu-img's find_nonzero: the offset of the first
// sector in p with a non-zero byte, or -1.
func firstNonzeroSector(p []byte) int {
	for i := 0; i < len(p); i += 512 {
		if !allZeroBytes(p[i:min(len(p), i+512)]) {
			return i
		}
	}
	return -1
}

func allZeroBytes(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

func runImgCompare(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	var fmt1, fmt2 string
	var strict, imageOpts, forceShare bool
	quiet, progress := false, false
	a, rc, ok := e.getopt(args, "f:F:T:pqsU", []qtool.LongOption{qtool.Opt("image-opts", false, 'I'), qtool.Opt("force-share", false, 'U')}, func(opt rune, arg string) bool {
		switch opt {
		case 'f':
			fmt1 = arg
		case 'F':
			fmt2 = arg
		case 'T':
			// the cache mode: accepted, without effect here
		case 'p':
			progress = true
		case 'q':
			quiet = true
		case 's':
			strict = true
		case 'U':
			forceShare = true
		case 'I':
			imageOpts = true
		}
		return true
	})
	if !ok {
		return rc
	}
	if len(a.operands) != 2 {
		fmt.Fprintf(stderr, "%s: Expecting two image file names\n", e.prog)
		return e.tryHelp()
	}
	if imageOpts && (fmt1 != "" || fmt2 != "") {
		fmt.Fprintf(stderr, "%s: --image-opts and -f/-F are mutually exclusive\n", e.prog)
		return 2
	}
	out := func(format string, a ...any) {
		if !quiet {
			fmt.Fprintf(stdout, format, a...)
		}
	}
	name1, name2 := a.operands[0], a.operands[1]
	prog := newImgProgress(stdout, progress && !quiet, 2)
	defer prog.end()
	// Both images in one session: -add-fd sets are installed once, and
	// either image may be /dev/fdset/N.
	s, ok := e.newSession(a.addFds)
	if !ok {
		return 2
	}
	defer s.close()
	n1, ok := s.openReadOnly(name1, fmt1, imageOpts, forceShare)
	if !ok {
		return 2
	}
	n2, ok := s.openReadOnly(name2, fmt2, imageOpts, forceShare)
	if !ok {
		return 2
	}
	size1, size2 := n1.Length(), n2.Length()
	total := min(size1, size2)
	base := max(size1, size2)
	advance := func(chunk int64) {
		share := float32(float32(chunk) / float32(base))
		prog.add(float32(share * 100))
	}
	prog.set(0)
	if strict && size1 != size2 {
		out("Strict mode: Image size mismatch!\n")
		return 1
	}
	buf1 := make([]byte, compareBufSize)
	buf2 := make([]byte, compareBufSize)
	readErr := func(name string, off int64, err error) int {
		fmt.Fprintf(stderr, "%s: Error while reading offset %d of %s: %s\n", e.prog, off, name, qtool.Strerror(err))
		return 4
	}
	statusErr := func(name string, err error) int {
		fmt.Fprintf(stderr, "%s: Sector allocation test failed for %s\n", e.prog, name)
		return 2
	}
	// checkEmpty is qemu-img's check_empty_sectors.
	checkEmpty := func(n *block.Node, name string, off, chunk int64) int {
		p := buf1[:chunk]
		if _, err := n.ReadAt(p, off); err != nil {
			return readErr(name, off, err)
		}
		if i := firstNonzeroSector(p); i >= 0 {
			out("Content mismatch at offset %d!\n", off+int64(i))
			return 1
		}
		return 0
	}
	for off := int64(0); off < total; {
		s1, err := chainStatus(n1, off, size1-off)
		if err != nil {
			return statusErr(name1, err)
		}
		s2, err := chainStatus(n2, off, size2-off)
		if err != nil {
			return statusErr(name2, err)
		}
		chunk := min(s1.length, s2.length)
		// BDRV_BLOCK_EOF is part of the status compared: a range that
		// reaches one image's end and not the other's differs.
		eof1, eof2 := off+s1.length == size1, off+s2.length == size2
		if strict && (s1.present != s2.present || s1.zero != s2.zero || s1.data != s2.data || s1.hasOffset != s2.hasOffset || eof1 != eof2) {
			out("Strict mode: Offset %d block status mismatch!\n", off)
			return 1
		}
		switch {
		case s1.zero && s2.zero:
		case s1.present == s2.present:
			if s1.present {
				chunk = min(chunk, compareBufSize)
				if _, err := n1.ReadAt(buf1[:chunk], off); err != nil {
					return readErr(name1, off, err)
				}
				if _, err := n2.ReadAt(buf2[:chunk], off); err != nil {
					return readErr(name2, off, err)
				}
				if diff, same := sectorMismatch(buf1[:chunk], buf2[:chunk]); diff || int64(same) != chunk {
					at := off
					if !diff {
						at += int64(same)
					}
					out("Content mismatch at offset %d!\n", at)
					return 1
				}
			}
		default:
			chunk = min(chunk, compareBufSize)
			var rc int
			if s1.present {
				rc = checkEmpty(n1, name1, off, chunk)
			} else {
				rc = checkEmpty(n2, name2, off, chunk)
			}
			if rc != 0 {
				return rc
			}
		}
		off += chunk
		advance(chunk)
	}
	if size1 != size2 {
		over, name := n1, name1
		if size2 > size1 {
			over, name = n2, name2
		}
		out("Warning: Image size mismatch!\n")
		end := over.Length()
		for off := total; off < end; {
			s, err := chainStatus(over, off, end-off)
			if err != nil {
				fmt.Fprintf(stderr, "%s: Sector allocation test failed for %s\n", e.prog, name)
				return 2
			}
			chunk := s.length
			if s.present && !s.zero {
				chunk = min(chunk, compareBufSize)
				if rc := checkEmpty(over, name, off, chunk); rc != 0 {
					return rc
				}
			}
			off += chunk
			advance(chunk)
		}
	}
	out("Images are identical.\n")
	return 0
}
