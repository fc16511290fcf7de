package blkdebug

import "syscall"

func syscallEIO() error { return syscall.EIO }
