package imgtool

// minivmm img info: qemu-img info over minivmm's block layer, and what
// the img subcommands that read images share (opening one as qemu-img's
// img_open, QEMU's QDict output order, its size_to_str).

import (
	"fmt"
	"io"
	"math"
	"minivmm/internal/qjson"
	"strconv"
	"strings"
	"time"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/cmdline"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["info"] = imgCommand{run: runImgInfo,
		usage: "info [-f fmt] [--output=ofmt] [--backing-chain] [-U] [--image-opts] [-add-fd fd=N,set=M] filename"}
}

// imgFormatSpecificer is a format that can describe its header for
// `img info` (block/qcow2's image).
type imgFormatSpecificer interface {
	FormatSpecific() qcow2.FormatInfo
}

// imgSnapshotLister is a format with internal snapshots (block/qcow2's
// image).
type imgSnapshotLister interface {
	Snapshots() ([]qcow2.SnapshotInfo, error)
}

// imgCommonOpts are the options the reading subcommands share.
type imgCommonOpts struct {
	format     string
	output     string // "human" or "json"
	imageOpts  bool
	forceShare bool
	addFds     []cmdline.Occurrence
}

// parse reads the command line of info and map: their shared options,
// those in more (handled by opt), and one image file name.
func (c *imgCommonOpts) parse(e *env, args []string, more []qtool.LongOption,
	opt func(c rune, arg string) bool) (filename string, rc int, ok bool) {
	stderr := e.stderr
	long := append([]qtool.LongOption{qtool.Opt("format", true, 'f'), qtool.Opt("output", true, 'O'),
		qtool.Opt("image-opts", false, 'I'), qtool.Opt("force-share", false, 'U')}, more...)
	a, rc, ok := e.getopt(args, "f:U", long, func(o rune, arg string) bool {
		switch o {
		case 'f':
			c.format = arg
		case 'O':
			if arg != "human" && arg != "json" {
				fmt.Fprintf(stderr, "%s: --output must be used with human or json as argument.\n", e.prog)
				return false
			}
			c.output = arg
		case 'I':
			c.imageOpts = true
		case 'U':
			c.forceShare = true
		case 'j':
			return e.object(arg)
		default:
			return opt(o, arg)
		}
		return true
	})
	if !ok {
		return "", rc, false
	}
	c.addFds = a.addFds
	if filename, ok = e.image(a); !ok {
		return "", 1, false
	}
	if c.imageOpts && c.format != "" {
		fmt.Fprintf(stderr, "%s: --image-opts and --format are mutually exclusive\n", e.prog)
		return "", 1, false
	}
	return filename, 0, true
}

// qdict is a JSON object that prints its members in the order QEMU's
// QDict iterates them: by hash bucket, the latest insertion first
// within one.
type qdict struct {
	keys []string
	vals []any // int64, string, bool, *qdict, []any
}

func (d *qdict) put(k string, v any) *qdict {
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return d
}

// qdictBucket is QDict's tdb_hash modulo its 512 buckets.
func qdictBucket(name string) uint32 {
	value := uint32(0x238F13AF) * uint32(len(name))
	for i := 0; i < len(name); i++ {
		value += uint32(name[i]) << (uint(i) * 5 % 24)
	}
	return (1103515243*value + 12345) % 512
}

// order is the indexes of d's members in iteration order.
func (d *qdict) order() []int {
	idx := make([]int, 0, len(d.keys))
	for b := uint32(0); b < 512 && len(idx) < len(d.keys); b++ {
		for i := len(d.keys) - 1; i >= 0; i-- {
			if qdictBucket(d.keys[i]) == b {
				idx = append(idx, i)
			}
		}
	}
	return idx
}

// writeJSON prints v as qobject_to_json_pretty does.
func writeJSON(b *strings.Builder, v any, indent int) {
	pad := func(n int) { b.WriteString(strings.Repeat("    ", n)) }
	switch v := v.(type) {
	case *qdict:
		if len(v.keys) == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteString("{\n")
		for n, i := range v.order() {
			if n > 0 {
				b.WriteString(",\n")
			}
			pad(indent + 1)
			b.WriteString(strconv.Quote(v.keys[i]))
			b.WriteString(": ")
			writeJSON(b, v.vals[i], indent+1)
		}
		b.WriteString("\n")
		pad(indent)
		b.WriteString("}")
	case []any:
		if len(v) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteString("[\n")
		for n, e := range v {
			if n > 0 {
				b.WriteString(",\n")
			}
			pad(indent + 1)
			writeJSON(b, e, indent+1)
		}
		b.WriteString("\n")
		pad(indent)
		b.WriteString("]")
	case string:
		b.WriteString(qjson.Quote(v))
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case int:
		b.WriteString(strconv.Itoa(v))
	case bool:
		b.WriteString(strconv.FormatBool(v))
	}
}

// sizeToStr is QEMU's size_to_str: three significant digits, binary units.
func sizeToStr(v int64) string {
	_, e := math.Frexp(float64(v) / (1000.0 / 1024.0))
	i := (e - 1) / 10
	if i < 0 {
		i = 0
	}
	suffixes := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	div := float64(uint64(1) << (uint(i) * 10))
	return cFormatG3(float64(v)/div) + " " + suffixes[i] + "B"
}

// cFormatG3 is C's "%0.3g".
func cFormatG3(f float64) string {
	return strconv.FormatFloat(f, 'g', 3, 64)
}

// pathCombine is QEMU's path_combine: name relative to base's directory.
func pathCombine(base, name string) string {
	if strings.HasPrefix(name, "/") {
		return name
	}
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		return base[:i+1] + name
	}
	return name
}

// imageInfo is one image's ImageInfo, in QAPI field order.
type imageInfo struct {
	d           *qdict
	specific    *qdict // format-specific "data", nil if none
	backing     string
	backingFull string // "" when it cannot be determined
	backingFmt  string
	snapshots   []qcow2.SnapshotInfo
}

func collectImageInfo(node *block.Node, filename string) (*imageInfo, error) {
	info := node.Info()
	info.Filename = filename
	ii := &imageInfo{d: &qdict{}}
	d := ii.d
	d.put("filename", info.Filename)
	d.put("format", node.Driver())
	dirty := false
	var fs *qcow2.FormatInfo
	if f, ok := node.Image().(imgFormatSpecificer); ok {
		v := f.FormatSpecific()
		fs = &v
		dirty = v.Dirty
	} else if info.DirtyFlag != nil {
		dirty = *info.DirtyFlag
	}
	d.put("dirty-flag", dirty)
	if info.ActualSize >= 0 {
		d.put("actual-size", info.ActualSize)
	}
	d.put("virtual-size", info.Length)
	if fs != nil {
		d.put("cluster-size", fs.ClusterSize)
		if fs.BackingFile != "" {
			ii.backing = fs.BackingFile
			d.put("backing-filename", fs.BackingFile)
			if !strings.HasPrefix(info.Filename, "json:") {
				ii.backingFull = pathCombine(info.Filename, fs.BackingFile)
				d.put("full-backing-filename", ii.backingFull)
			} else if dir, ok := block.Dirname(node); ok {
				// QEMU's bdrv_get_full_backing_filename: relative to the
				// directory below the json: description.
				ii.backingFull = pathCombine(dir, fs.BackingFile)
				d.put("full-backing-filename", ii.backingFull)
			}
			if fs.BackingFormat != "" {
				ii.backingFmt = fs.BackingFormat
				d.put("backing-filename-format", fs.BackingFormat)
			}
		}
		if err := ii.putSnapshots(node); err != nil {
			return nil, err
		}
		data := &qdict{}
		if fs.Version >= 3 {
			data.put("compat", "1.1")
			if fs.DataFile != "" {
				data.put("data-file", fs.DataFile)
			}
			if fs.HasDataFile {
				data.put("data-file-raw", fs.DataFileRaw)
			}
			data.put("extended-l2", fs.ExtendedL2)
			data.put("lazy-refcounts", fs.LazyRefcounts)
			data.put("corrupt", fs.Corrupt)
		} else {
			data.put("compat", "0.10")
		}
		data.put("refcount-bits", int64(fs.RefcountBits))
		data.put("compression-type", fs.Compression)
		ii.specific = data
		d.put("format-specific", (&qdict{}).put("type", node.Driver()).put("data", data))
	}
	return ii, nil
}

// putSnapshots adds the internal snapshots, as QEMU's SnapshotInfo list.
func (ii *imageInfo) putSnapshots(node *block.Node) error {
	l, ok := node.Image().(imgSnapshotLister)
	if !ok {
		return nil
	}
	snaps, err := l.Snapshots()
	if err != nil || len(snaps) == 0 {
		return err
	}
	ii.snapshots = snaps
	list := make([]any, len(snaps))
	for i, sn := range snaps {
		d := (&qdict{}).put("id", sn.ID).put("name", sn.Name).put("vm-state-size", int64(sn.VMStateSize)).
			put("date-sec", int64(sn.DateSec)).put("date-nsec", int64(sn.DateNsec)).
			put("vm-clock-sec", int64(sn.VMClockNsec/1e9)).put("vm-clock-nsec", int64(sn.VMClockNsec%1e9))
		if sn.Icount != -1 {
			d.put("icount", sn.Icount)
		}
		list[i] = d
	}
	ii.d.put("snapshots", list)
	return nil
}

// snapshotTable prints the snapshot list as bdrv_snapshot_dump does,
// dates in local time.
func snapshotTable(b *strings.Builder, snaps []qcow2.SnapshotInfo) {
	fmt.Fprintf(b, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")
	for _, sn := range snaps {
		secs := sn.VMClockNsec / 1e9
		clock := fmt.Sprintf("%02d:%02d:%02d.%03d", secs/3600, secs/60%60, secs%60, sn.VMClockNsec/1e6%1000)
		icount := ""
		if sn.Icount != -1 {
			icount = strconv.FormatInt(sn.Icount, 10)
		}
		date := time.Unix(int64(sn.DateSec), 0).Local().Format("2006-01-02 15:04:05")
		// C pads by bytes, Go's %-16s by runes: pad by hand for UTF-8 names.
		pad := func(s string, w int) string { return s + strings.Repeat(" ", max(0, w-len(s))) }
		fmt.Fprintf(b, "%s %s %8s%20s%13s%11s\n", pad(sn.ID, 9), pad(sn.Name, 16), sizeToStr(int64(sn.VMStateSize)), date, clock, icount)
	}
}

// human prints the image as bdrv_image_info_dump does.
func (ii *imageInfo) human(b *strings.Builder) {
	get := func(k string) (any, bool) {
		for i, key := range ii.d.keys {
			if key == k {
				return ii.d.vals[i], true
			}
		}
		return nil, false
	}
	filename, _ := get("filename")
	format, _ := get("format")
	vsize, _ := get("virtual-size")
	dsize := "unavailable"
	if a, ok := get("actual-size"); ok {
		dsize = sizeToStr(a.(int64))
	}
	fmt.Fprintf(b, "image: %s\nfile format: %s\nvirtual size: %s (%d bytes)\ndisk size: %s\n",
		filename, format, sizeToStr(vsize.(int64)), vsize.(int64), dsize)
	if cs, ok := get("cluster-size"); ok {
		fmt.Fprintf(b, "cluster_size: %d\n", cs.(int64))
	}
	if dirty, _ := get("dirty-flag"); dirty == true {
		b.WriteString("cleanly shut down: no\n")
	}
	if ii.backing != "" {
		fmt.Fprintf(b, "backing file: %s", ii.backing)
		if ii.backingFull == "" {
			b.WriteString(" (cannot determine actual path)")
		} else if ii.backingFull != ii.backing {
			fmt.Fprintf(b, " (actual path: %s)", ii.backingFull)
		}
		b.WriteString("\n")
		if ii.backingFmt != "" {
			fmt.Fprintf(b, "backing file format: %s\n", ii.backingFmt)
		}
	}
	if ii.snapshots != nil {
		b.WriteString("Snapshot list:\n")
		snapshotTable(b, ii.snapshots)
	}
	if ii.specific != nil {
		b.WriteString("Format specific information:\n")
		for _, i := range ii.specific.order() {
			v := ii.specific.vals[i]
			var s string
			switch v := v.(type) {
			case string:
				s = v
			default:
				var vb strings.Builder
				writeJSON(&vb, v, 0)
				s = vb.String()
			}
			fmt.Fprintf(b, "    %s: %s\n", strings.ReplaceAll(ii.specific.keys[i], "-", " "), s)
		}
	}
}

func runImgInfo(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	c := imgCommonOpts{output: "human"}
	chain := false
	filename, rc, ok := c.parse(e, args, []qtool.LongOption{qtool.Opt("backing-chain", false, 'b')},
		func(rune, string) bool { chain = true; return true })
	if !ok {
		return rc
	}
	var infos []*imageInfo
	format, imageOpts := c.format, c.imageOpts
	seen := map[string]bool{}
	for {
		if chain && !imageOpts {
			if seen[filename] {
				fmt.Fprintf(stderr, "%s: Backing file '%s' creates an infinite loop.\n", e.prog, filename)
				return 1
			}
			seen[filename] = true
		}
		s, ok := e.newSession(c.addFds)
		if !ok {
			return 1
		}
		n, name, ok := s.openNoBacking(filename, format, imageOpts, c.forceShare)
		if !ok {
			s.close()
			return 1
		}
		ii, err := collectImageInfo(n, name)
		s.close()
		if err != nil {
			fmt.Fprintf(stderr, "%s: %s\n", e.prog, qtool.Message(err))
			return 1
		}
		infos = append(infos, ii)
		if !chain || ii.backing == "" {
			break
		}
		filename, format, imageOpts = ii.backingFull, ii.backingFmt, false
		if filename == "" {
			filename = ii.backing
		}
	}
	var b strings.Builder
	if c.output == "json" {
		if chain {
			list := make([]any, len(infos))
			for i, ii := range infos {
				list[i] = ii.d
			}
			writeJSON(&b, list, 0)
		} else {
			writeJSON(&b, infos[0].d, 0)
		}
		b.WriteString("\n")
	} else {
		for i, ii := range infos {
			if i > 0 {
				b.WriteString("\n")
			}
			ii.human(&b)
		}
	}
	io.WriteString(stdout, b.String())
	return 0
}
