package main

import (
	"minivmm/block"
	"minivmm/block/export"
	"minivmm/block/export/nbd"
	"minivmm/cmdline"
	"minivmm/vm/vhostuser"
)

// exports are the VMM's block exports and its NBD server.
type exports struct {
	*export.Table
	nbd *nbd.Service
}

// Close removes every export, then stops the NBD server.
func (x *exports) Close() error {
	err := x.CloseAll()
	x.nbd.Close()
	return err
}

// addExports starts the -nbd-server (the last given, as QEMU takes it)
// and every -export, in command-line order, after the block nodes they
// serve.
func addExports(g *block.Graph, occ []cmdline.Occurrence, rep *reporter) (*exports, error) {
	t := export.NewTable(g)
	vhostuser.Register(t, rep.Printf)
	x := &exports{Table: t, nbd: nbd.NewService(t, rep.Printf)}
	var srv *cmdline.Occurrence
	for i := range occ {
		if occ[i].Name == "nbd-server" {
			srv = &occ[i]
		}
	}
	if srv != nil {
		o, err := cmdline.ParseNBDServer(srv.Value)
		var so nbd.ServerOptions
		if err == nil {
			so, err = o.Resolve(g.Objects())
		}
		if err == nil {
			err = x.nbd.Start(so)
		}
		if err != nil {
			return nil, srv.Wrap(err)
		}
	}
	for _, oc := range occ {
		if oc.Name != "export" {
			continue
		}
		o, err := cmdline.ParseExport(oc.Value)
		if err == nil {
			err = x.Add(o)
		}
		if err != nil {
			x.Close()
			return nil, oc.Wrap(err)
		}
	}
	return x, nil
}
