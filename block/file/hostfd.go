package file

// HostFd is the descriptor the image reads and writes through, for a
// caller that copies between files in the kernel (copy_file_range, as
// qemu-img convert -C). It stays the image's: the caller must not close
// it, nor use it across a reopen of the node.
func (img *image) HostFd() int { return img.fd }
