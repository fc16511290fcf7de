package blkdebug

import (
	"strings"

	"minivmm/block"
)

// exactName is what blkdebug_refresh_filename needs: whether the node
// was given no option but its config file and image (only then does a
// "blkdebug:CONFIG:IMAGE" filename describe it), and the config's name.
type exactName struct {
	plain  bool
	config string
}

func newExactName(o block.Options) exactName {
	for k := range o {
		if k != "config" && k != "image" {
			return exactName{}
		}
	}
	config, _ := o.String("config", "")
	return exactName{plain: true, config: config}
}

// ExactFilename is QEMU's blkdebug_refresh_filename:
// "blkdebug:CONFIG:IMAGE" where the image has a filename of its own and
// nothing but the config was given.
func (b *image) ExactFilename() (string, bool) {
	if !b.exact.plain {
		return "", false
	}
	img := b.child.Filename()
	if strings.HasPrefix(img, "json:") {
		return "", false
	}
	return "blkdebug:" + b.exact.config + ":" + img, true
}
