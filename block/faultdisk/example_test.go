package faultdisk_test

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"minivmm/block"
	"minivmm/block/faultdisk"
	_ "minivmm/block/raw"
	"minivmm/qemuopen"
)

// A raw image on a disk that fails its second flush with EIO and has room
// for 64 KiB.
func Example() {
	reg := qemuopen.New(qemuopen.Config{})
	defer reg.CloseAll()
	g := block.NewGraph(reg)
	defer g.Close()

	d := faultdisk.New(1 << 20)
	d.SetSpaceLimit(64 << 10)
	flushes := d.AddRule(&faultdisk.Rule{Kinds: faultdisk.Flush, After: 1, Times: 1, Err: unix.EIO})
	if err := d.Install(g, "fault"); err != nil {
		panic(err)
	}
	n, err := g.Add(block.Options{"driver": "raw", "read-only": false, "file": block.Options{"driver": "fault"}})
	if err != nil {
		panic(err)
	}
	b, err := g.Attach("", n, block.Perm{Write: true})
	if err != nil {
		panic(err)
	}
	defer g.Detach(b)

	for i := range 3 {
		_, werr := n.WriteAt(make([]byte, 32<<10), int64(i)*32<<10)
		ferr := n.Flush()
		fmt.Printf("write %d: ENOSPC %v; flush: EIO %v\n", i, errors.Is(werr, unix.ENOSPC), errors.Is(ferr, unix.EIO))
	}
	fmt.Println("flush rule fired", flushes.Fired(), "time(s); pending after the failed flush:", len(d.Pending()))
	// Output:
	// write 0: ENOSPC false; flush: EIO false
	// write 1: ENOSPC false; flush: EIO true
	// write 2: ENOSPC true; flush: EIO false
	// flush rule fired 1 time(s); pending after the failed flush: 0
}
