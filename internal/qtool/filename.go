package qtool

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"minivmm/block"
	"minivmm/block/nbdclient"
)

// protocolPrefixes are the "proto:" filename prefixes QEMU's protocol
// drivers claim (bdrv_find_protocol), with the driver each names and
// whether the prefix stays in the filename the driver parses.
var protocolPrefixes = []struct {
	prefix, driver string
	keep           bool
}{
	{"file:", "file", false},
	{"null-co://", "null-co", true},
	{"blkdebug:", "blkdebug", true},
}

// ParseFilename turns a filename as QEMU's tools take it into node
// options: "json:{...}" is a whole tree of options (QEMU's
// bdrv_parse_json, dotted keys nested); a protocol prefix ("file:",
// "null-co://", "blkdebug:") names the protocol driver; anything else is
// a file. The result is the protocol's options when format is false
// (what a format's "file" child is), or, for json:, the options as given.
// isJSON says which.
func ParseFilename(name string) (opts block.Options, isJSON bool, err error) {
	if rest, ok := strings.CutPrefix(name, "json:"); ok {
		opts, err := ParseJSONOptions(rest)
		return opts, true, err
	}
	for _, p := range protocolPrefixes {
		if strings.HasPrefix(name, p.prefix) {
			filename := name
			if !p.keep {
				filename = name[len(p.prefix):]
				if hasProtocol(filename) {
					// What is left would read as a protocol name: "./"
					// keeps it a file, as QEMU's
					// bdrv_parse_filename_strip_prefix makes it.
					filename = "./" + filename
				}
			}
			if p.driver == "blkdebug" {
				opts, err := parseBlkdebugFilename(name)
				return opts, false, err
			}
			if p.driver == "null-co" {
				// null-co takes no filename: the prefix is all there is.
				return block.Options{"driver": p.driver}, false, nil
			}
			return block.Options{"driver": p.driver, "filename": filename}, false, nil
		}
	}
	if rest, ok := strings.CutPrefix(name, "nbd:"); ok && !strings.Contains(name, "://") {
		opts, err := parseLegacyNBD(rest)
		return opts, false, err
	}
	// A URL a registered protocol driver claims (nbd://, nbd+unix://),
	// else a file.
	return block.Options{"driver": block.ProtocolFor(name), "filename": name}, false, nil
}

// ErrJSONFilename is a json: filename that is not a JSON object.
var ErrJSONFilename = block.ErrJSONFilename

// ParseJSONOptions reads the object of a json: filename (block's
// ParseJSONFilename).
func ParseJSONOptions(s string) (block.Options, error) { return block.ParseJSONFilename(s) }

// MergeOptions puts src over dst, nested options merged key by key (what
// qemu-io's "open -o" does to the options a filename makes).
func MergeOptions(dst, src block.Options) {
	for k, v := range src {
		if s, ok := v.(block.Options); ok {
			if d, ok := dst[k].(block.Options); ok {
				MergeOptions(d, s)
				continue
			}
		}
		dst[k] = v
	}
}

// fileOptions are the options File, Format and Extra describe: the
// filename parsed (ParseFilename) and, unless it names a format or a
// json: tree, put under a format node's "file" (a probe then picks the
// format when none is named).
func (f *OpenFlags) fileOptions(g *block.Graph) (block.Options, error) {
	format := f.Format
	if d, err := f.Extra.String("driver", ""); err == nil && format == "" {
		format = d
	}
	var opts block.Options
	var bdImage block.Options // a blkdebug: filename's image, as parsed
	switch {
	case f.File == "" && f.Extra != nil: // qemu-io's open -o without a path
		opts = block.Options{}
	default:
		proto, isJSON, err := ParseFilename(f.File)
		if err != nil {
			return nil, err
		}
		if isJSON {
			opts = proto
			if format != "" {
				setDefault(opts, "driver", format)
			}
			break
		}
		if img, ok := proto["image"].(block.Options); ok && proto["driver"] == "blkdebug" {
			bdImage = img.Clone()
		}
		if name, _ := proto.String("driver", ""); !hasDriver(g, name) {
			// A protocol QEMU has that this build has not (blkdebug).
			return nil, fmt.Errorf("Unknown protocol '%s'", name)
		}
		drv, known := (*block.Driver)(nil), false
		if format != "" {
			if drv, known = g.LookupDriver(format); !known {
				return nil, fmt.Errorf("Unknown driver '%s'", format)
			}
		}
		switch {
		case format == "":
			opts = block.Options{"file": proto}
		case drv.Format:
			opts = block.Options{"driver": format, "file": proto}
		case format == proto["driver"]:
			opts = proto
		case format == "blkdebug":
			// blkdebug_parse_filename: a filename without the
			// "blkdebug:" prefix is the image's.
			opts = block.Options{"driver": format, "image": proto}
			bdImage = proto.Clone()
		default:
			// A protocol named with -f takes the whole filename.
			opts = block.Options{"driver": format, "filename": f.File}
		}
	}
	if f.Extra != nil {
		MergeOptions(opts, f.Extra.Clone())
		sinkFilename(g, opts)
	}
	if bdImage != nil {
		formatOverImage(g, opts, bdImage)
	}
	check := opts
	if _, named := opts["driver"]; !named && len(opts) > 1 {
		// Options beside the file are checked against the format the
		// open will probe.
		file, _ := opts.Object("file")
		if fn, _ := file.String("filename", ""); fn != "" && file["driver"] == "file" {
			if probed, err := block.ProbeFile(g.Files(), fn); err == nil {
				check = opts.Clone()
				check["driver"] = probed
			}
		}
	}
	if err := legacyNBD(opts); err != nil {
		return nil, err
	}
	if err := checkLegacy(g, check); err != nil {
		return nil, err
	}
	return opts, nil
}

// legacyNBD applies the nbd driver's legacy host/port/path options in
// every nbd node of opts (bdrv_open's path takes them; QMP does not).
func legacyNBD(opts block.Options) error {
	switch d, _ := opts.String("driver", ""); d {
	case "nbd":
		if err := nbdclient.ApplyLegacyOptions(opts); err != nil {
			return err
		}
	case "raw":
		// raw reads offset and size through QemuOpts, which parses a
		// string for a number ({"offset": "512"}).
		for _, k := range []string{"offset", "size"} {
			if v, ok := opts[k].(string); ok {
				opts[k] = block.FromKeyval(map[string]any{k: v})[k]
			}
		}
	case "blkdebug":
		// blkdebug reads its config name through QemuOpts, which takes
		// a number for a string ({"config": 42} names the file "42").
		if v, ok := opts["config"].(json.Number); ok {
			opts["config"] = v.String()
		}
	}
	for _, v := range opts {
		if c, ok := v.(block.Options); ok {
			if err := legacyNBD(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// formatOverImage: the image of a "blkdebug:CONFIG:IMAGE" filename is a
// filename QEMU opens with the options given for the image child
// (blkdebug's x-image); where those name a format ("-o
// image.driver=qcow2"), IMAGE is that format's file, not the image's own
// filename.
func formatOverImage(g *block.Graph, opts, parsed block.Options) {
	top := opts
	if d, _ := top.String("driver", ""); d != "blkdebug" {
		top, _ = opts["file"].(block.Options)
	}
	img, ok := top["image"].(block.Options)
	if d, _ := top.String("driver", ""); !ok || d != "blkdebug" {
		return
	}
	name, _ := img.String("driver", "")
	drv, known := g.LookupDriver(name)
	fn, _ := img.String("filename", "")
	pfn, _ := parsed.String("filename", "")
	if _, hasFile := img["file"]; !known || !drv.Format || hasFile || fn != pfn {
		return
	}
	delete(img, "filename")
	img["file"] = parsed
}

// checkLegacy applies what QEMU's bdrv_open, which the tools use, checks
// before the options reach a driver, in its words: a format needs a
// "file", a child given by filename alone finds its protocol from it, and
// an option the driver does not have is named with the driver.
func checkLegacy(g *block.Graph, opts block.Options) error {
	name, _ := opts.String("driver", "")
	drv, known := g.LookupDriver(name)
	// A format's "file" and a filter's "image" (blkdebug) are protocol
	// children: given by filename alone, they take their protocol from it.
	for _, key := range []string{"file", "image"} {
		file, ok := opts[key].(block.Options)
		if !ok {
			continue
		}
		if _, hasDriver := file["driver"]; !hasDriver {
			if fn, err := file.String("filename", ""); err == nil && fn != "" {
				proto, _, _ := ParseFilename(fn)
				for k, v := range proto {
					file[k] = v
				}
			}
		}
		if err := checkLegacy(g, file); err != nil {
			return err
		}
	}
	// Quorum's children are whole nodes, each completed as this one is.
	for _, child := range listedChildren(opts["children"]) {
		if err := checkLegacy(g, child); err != nil {
			return err
		}
	}
	if !known {
		return nil
	}
	if _, hasFile := opts["file"]; drv.Format && !hasFile {
		return errors.New(`A block device must be specified for "file"`)
	}
	schema, _ := drv.Schema()
	for k := range opts {
		if _, ok := schema[k]; ok {
			continue
		}
		if drv.Format {
			return fmt.Errorf("Block format '%s' does not support the option '%s'", name, k)
		}
		return fmt.Errorf("Block protocol '%s' doesn't support the option '%s'", name, k)
	}
	return nil
}

// listedChildren are the inline nodes of a list of children (quorum's
// "children": a JSON list, or keyval's children.0, children.1, ...),
// made Options in place so that completing them completes the list.
func listedChildren(v any) []block.Options {
	var out []block.Options
	switch v := v.(type) {
	case []any:
		for i, e := range v {
			if m, ok := e.(map[string]any); ok {
				v[i] = block.Options(m)
			}
			if o, ok := v[i].(block.Options); ok {
				out = append(out, o)
			}
		}
	case block.Options:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			if o, ok := v[k].(block.Options); ok {
				out = append(out, o)
			}
		}
	}
	return out
}

func hasDriver(g *block.Graph, name string) bool {
	_, ok := g.LookupDriver(name)
	return ok
}

// parseLegacyNBD reads the part after "nbd:" of QEMU's legacy NBD
// filenames: "unix:PATH" or "HOST:PORT" ("[V6ADDR]:PORT"), either with
// ":exportname=NAME" after it (QEMU's nbd_parse_filename).
func parseLegacyNBD(spec string) (block.Options, error) {
	opts := block.Options{"driver": "nbd"}
	if i := strings.Index(spec, ":exportname="); i >= 0 {
		opts["export"] = spec[i+len(":exportname="):]
		spec = spec[:i]
	}
	if path, ok := strings.CutPrefix(spec, "unix:"); ok {
		opts["server"] = block.Options{"type": "unix", "path": path}
		return opts, nil
	}
	var host, port string
	if rest, ok := strings.CutPrefix(spec, "["); ok {
		h, p, found := strings.Cut(rest, "]:")
		if !found {
			return nil, fmt.Errorf("error parsing IPv6 address '%s'", spec)
		}
		host, port = h, p
	} else {
		h, p, found := strings.Cut(spec, ":")
		if !found || strings.Contains(p, ":") {
			return nil, fmt.Errorf("error parsing address '%s'", spec)
		}
		host, port = h, p
	}
	opts["server"] = block.Options{"type": "inet", "host": host, "port": port}
	return opts, nil
}

// hasProtocol is QEMU's path_has_protocol: a colon before any slash.
func hasProtocol(name string) bool {
	i := strings.IndexAny(name, ":/")
	return i >= 0 && name[i] == ':'
}
