module minivmm

go 1.26.0

require golang.org/x/sys v0.50.0

require github.com/spf13/pflag v1.1.0

require github.com/klauspost/compress v1.20.4

require github.com/digitalocean/go-libvirt v0.0.0-20220804181439-8648fbde413e // indirect

// go-qemu: only tests use it, as a real client of the monitor (fd passing needs oob).
require github.com/digitalocean/go-qemu v0.0.0-20250212194115-ee9b0668d242

// go-qcow2reader: only bench/ uses it, as the Go peer qcow2 reads are measured against.
require github.com/lima-vm/go-qcow2reader v0.7.1
