package qtool

import (
	"strings"

	"minivmm/block"
)

// sinkFilename passes a filename given beside options that name a format
// or filter ("open -o driver=copy-on-read,file.driver=qcow2 IMAGE") down
// to the node that opens a file, as QEMU's bdrv_open hands it to each
// "file" child in turn: a format given a filename and no "file" gets the
// filename's protocol as its file; blkdebug given a plain filename takes
// it for its image (blkdebug_parse_filename's x-image).
func sinkFilename(g *block.Graph, opts block.Options) {
	name, _ := opts.String("driver", "")
	fn, err := opts.String("filename", "")
	if err == nil && fn != "" {
		drv, known := g.LookupDriver(name)
		switch {
		case known && drv.Format:
			file, isOpts := opts["file"].(block.Options)
			if _, hasFile := opts["file"]; !hasFile {
				file, isOpts = block.Options{}, true
				opts["file"] = file
			}
			if _, named := file["filename"]; isOpts && !named {
				delete(opts, "filename")
				if _, hasDriver := file["driver"]; hasDriver {
					file["filename"] = fn
				} else if proto, _, err := ParseFilename(fn); err == nil {
					for k, v := range proto {
						file[k] = v
					}
				}
			}
		case name == "blkdebug" && !strings.HasPrefix(fn, "blkdebug:"):
			img, ok := opts["image"].(block.Options)
			if !ok {
				if _, given := opts["image"]; !given {
					img = block.Options{}
					opts["image"] = img
					ok = true
				}
			}
			if _, named := img["filename"]; ok && !named {
				delete(opts, "filename")
				img["filename"] = fn
				if _, hasDriver := img["driver"]; !hasDriver {
					proto, _, err := ParseFilename(fn)
					if err == nil {
						for k, v := range proto {
							img[k] = v
						}
					}
				}
			}
		}
	}
	for _, key := range []string{"file", "image"} {
		if c, ok := opts[key].(block.Options); ok {
			sinkFilename(g, c)
		}
	}
}
