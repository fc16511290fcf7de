package qtool

import (
	"errors"
	"strings"

	"minivmm/block"
)

// parseBlkdebugFilename reads "blkdebug:CONFIG:IMAGE" as QEMU's
// blkdebug_parse_filename does: the config file path up to the first
// colon (empty: no config file), the image's own filename after it
// (itself a filename with or without a protocol prefix).
func parseBlkdebugFilename(name string) (block.Options, error) {
	rest, _ := strings.CutPrefix(name, "blkdebug:")
	config, image, ok := strings.Cut(rest, ":")
	if !ok {
		return nil, errors.New("blkdebug requires both config file and image path")
	}
	child, isJSON, err := ParseFilename(image)
	if err != nil {
		return nil, err
	}
	if isJSON {
		return nil, errors.New("blkdebug requires both config file and image path")
	}
	opts := block.Options{"driver": "blkdebug", "image": child}
	if config != "" {
		opts["config"] = config
	}
	return opts, nil
}
