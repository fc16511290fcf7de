package imgtool

// minivmm img check: qemu-img check, with -r leaks|all repair
// (qcow2.Repair), for qcow2 images, with qemu-img 7.2's output and exit
// codes.

import (
	"errors"
	"fmt"
	"io"
	"minivmm/internal/qjson"
	"strconv"
	"strings"

	"minivmm/block"
	"minivmm/block/qcow2"
	"minivmm/internal/qtool"
)

func init() {
	imgCommands["check"] = imgCommand{
		run:   runImgCheck,
		usage: "check [-f fmt] [--output=ofmt] [-r [leaks | all]] [-U] [-q] [-add-fd fd=N,set=M] filename",
	}
}

func runImgCheck(e *env, args []string) int {
	stdout, stderr := e.stdout, e.stderr
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, e.prog+": "+format+"\n", a...)
		return 1
	}
	var format, output = "", "human"
	var quiet, forceShare, imageOpts bool
	var fix int
	a, rc, ok := e.getopt(args, "f:r:T:qU", []qtool.LongOption{
		qtool.Opt("format", true, 'f'), qtool.Opt("repair", true, 'r'), qtool.Opt("output", true, 'O'),
		qtool.Opt("image-opts", false, 'I'), qtool.Opt("force-share", false, 'U'),
	}, func(c rune, arg string) bool {
		switch c {
		case 'f':
			format = arg
		case 'r':
			if arg != "leaks" && arg != "all" {
				fail("Unknown option for -r (expecting 'leaks' or 'all'): %s", arg)
				return false
			}
			fix = qcow2.FixLeaks
			if arg == "all" {
				fix |= qcow2.FixErrors
			}
		case 'O':
			if arg != "human" && arg != "json" {
				fail("--output must be used with human or json as argument.")
				return false
			}
			output = arg
		case 'q':
			quiet = true
		case 'U':
			forceShare = true
		case 'T':
			fail("option -T is not supported by minivmm img check")
			return false
		case 'I':
			imageOpts = true
		}
		return true
	})
	if !ok {
		return rc
	}
	filename, ok := e.image(a)
	if !ok {
		return 1
	}

	s, ok := e.newSession(a.addFds)
	if !ok {
		return 1
	}
	defer s.close()
	graph := s.g

	if format != "" {
		if _, ok := graph.LookupDriver(format); !ok {
			return fail("Could not open '%s': Unknown driver '%s'", filename, format)
		}
	}
	fileOpts := block.Options{"driver": "file", "filename": filename}
	var imgOpts block.Options
	if imageOpts {
		// The check reads the file child itself: its options are the
		// file.* of the image's.
		o, err := (&qtool.OpenFlags{File: filename, ImageOpts: true}).Options(graph)
		if err != nil {
			return fail("Could not open '%s': %s", filename, qtool.Message(err))
		}
		imgOpts = o
		if drv, ok := o["driver"].(string); ok {
			format = drv
		}
		if fileOpts, ok = o["file"].(block.Options); !ok {
			return fail("Could not open '%s': minivmm img check --image-opts needs the file child's options (file.driver=file,file.filename=...)", filename)
		}
	}
	fileOpts["read-only"], fileOpts["force-share"] = fix == 0, forceShare
	if fix != 0 {
		// A repair discards the clusters it frees, as QEMU's.
		fileOpts["discard"] = "unmap"
	}
	file, err := graph.Add(fileOpts)
	if err != nil {
		return fail("Could not open '%s': %s", filename, qtool.Message(err))
	}
	// The check reads the file as qcow2 reads it, and locks it so.
	if _, err := graph.Attach("", file, block.Perm{Write: fix != 0, Image: true}); err != nil {
		return fail("Could not open '%s': %s", filename, qtool.Message(err))
	}
	if format == "" {
		if format, err = block.ProbeNode(file); err != nil {
			return fail("Could not open '%s': %s", filename, err)
		}
	}
	if format != "qcow2" {
		fmt.Fprintf(stderr, "%s: This image format does not support checks\n", e.prog)
		return 63
	}
	if err := openCheckDataFile(graph, file, imgOpts, fix == 0, forceShare); err != nil {
		return fail("Could not open '%s': %s", filename, qtool.Message(err))
	}

	var res *qcow2.CheckResult
	var leaksFixed, corruptionsFixed int64
	if fix != 0 {
		// As QEMU's read-write open: autoclear bits it does not know
		// are cleared.
		if err := qcow2.ClearUnknownAutoclear(file); err != nil {
			return fail("Could not open '%s': %s", filename, qtool.Message(err))
		}
		var rr *qcow2.RepairResult
		rr, err = qcow2.Repair(file, stderr, fix)
		if rr != nil {
			res = rr.CheckResult
		}
		if err == nil && (rr.LeaksFixed > 0 || rr.CorruptionsFixed > 0) {
			leaksFixed, corruptionsFixed = rr.LeaksFixed, rr.CorruptionsFixed
			// qemu-img: report the fixes, then check again.
			if output == "human" && !quiet {
				fmt.Fprintf(stdout, "The following inconsistencies were found and repaired:\n\n"+
					"    %d leaked clusters\n    %d corruptions\n\n"+
					"Double checking the fixed image now...\n", rr.LeaksFixed, rr.CorruptionsFixed)
			}
			res, err = qcow2.Check(file, stderr)
		}
	} else {
		res, err = qcow2.Check(file, stderr)
	}
	var oe *qcow2.CheckOpenError
	if errors.As(err, &oe) {
		return fail("Could not open '%s': %s", filename, qtool.Message(oe.Err))
	}
	if err == nil {
		if !quiet {
			var out string
			if output == "json" {
				out = checkJSON(res, filename, format, leaksFixed, corruptionsFixed)
			} else {
				out = checkHuman(res)
			}
			io.WriteString(stdout, out)
		}
	}
	if err != nil || res.CheckErrors > 0 {
		var re *qcow2.CheckReportError
		if errors.As(err, &re) {
			// error_report's line, then its hint as it is.
			fmt.Fprintf(stderr, "%s: %s\n%s", e.prog, re.Msg, re.Hint)
		}
		if err != nil {
			return fail("Check failed: %s", qtool.Message(err))
		}
		return fail("Check failed")
	}
	switch {
	case res.Corruptions > 0:
		return 2
	case res.Leaks > 0:
		return 3
	}
	return 0
}

// checkHuman is qemu-img's dump_human_image_check.
func checkHuman(r *qcow2.CheckResult) string {
	var b strings.Builder
	if r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0 {
		b.WriteString("No errors were found on the image.\n")
	} else {
		if r.Corruptions > 0 {
			fmt.Fprintf(&b, "\n%d errors were found on the image.\n"+
				"Data may be corrupted, or further writes to the image may corrupt it.\n", r.Corruptions)
		}
		if r.Leaks > 0 {
			fmt.Fprintf(&b, "\n%d leaked clusters were found on the image.\n"+
				"This means waste of disk space, but no harm to data.\n", r.Leaks)
		}
		if r.CheckErrors > 0 {
			fmt.Fprintf(&b, "\n%d internal errors have occurred during the check.\n", r.CheckErrors)
		}
	}
	if r.TotalClusters != 0 && r.AllocatedClusters != 0 {
		fmt.Fprintf(&b, "%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
			r.AllocatedClusters, r.TotalClusters,
			float64(r.AllocatedClusters)*100/float64(r.TotalClusters),
			float64(r.FragmentedClusters)*100/float64(r.AllocatedClusters),
			float64(r.CompressedClusters)*100/float64(r.AllocatedClusters))
	}
	if r.ImageEndOffset != 0 {
		fmt.Fprintf(&b, "Image end offset: %d\n", r.ImageEndOffset)
	}
	return b.String()
}

// checkJSON is qemu-img's dump_json_image_check: QAPI's ImageCheck in
// the order QEMU 7.2's QDict prints it, optional members only when not 0.
// leaksFixed and corruptionsFixed are those of a repair (-r), 0 without.
func checkJSON(r *qcow2.CheckResult, filename, format string, leaksFixed, corruptionsFixed int64) string {
	var b strings.Builder
	b.WriteString("{\n")
	first := true
	put := func(key, val string) {
		if !first {
			b.WriteString(",\n")
		}
		first = false
		fmt.Fprintf(&b, "    %s: %s", strconv.Quote(key), val)
	}
	num := func(key string, v int64, optional bool) {
		if !optional || v != 0 {
			put(key, strconv.FormatInt(v, 10))
		}
	}
	num("image-end-offset", r.ImageEndOffset, true)
	num("compressed-clusters", r.CompressedClusters, true)
	num("total-clusters", r.TotalClusters, true)
	num("corruptions", r.Corruptions, true)
	num("corruptions-fixed", corruptionsFixed, true)
	num("check-errors", r.CheckErrors, false)
	num("leaks", r.Leaks, true)
	num("leaks-fixed", leaksFixed, true)
	num("allocated-clusters", r.AllocatedClusters, true)
	put("filename", qjson.Quote(filename))
	put("format", qjson.Quote(format))
	num("fragmented-clusters", r.FragmentedClusters, true)
	b.WriteString("\n}\n")
	return b.String()
}
