package main

import (
	"minivmm/block"
	"minivmm/cmdline"
	"minivmm/vm/vhostuser"
)

// addExports starts every -export, in command-line order, after the
// block nodes they serve.
func addExports(g *block.Graph, occ []cmdline.Occurrence, rep *reporter) (*vhostuser.Exports, error) {
	x := vhostuser.NewExports(g, rep.Printf)
	for _, oc := range occ {
		if oc.Name != "export" {
			continue
		}
		o, err := cmdline.ParseExport(oc.Value)
		if err == nil {
			err = x.Add(o)
		}
		if err != nil {
			x.CloseAll()
			return nil, oc.Wrap(err)
		}
	}
	return x, nil
}
