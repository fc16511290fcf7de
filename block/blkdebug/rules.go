package blkdebug

import (
	"errors"
	"fmt"
	"strconv"
	"syscall"
)

// ioType is QEMU's BlkdebugIOType.
type ioType int

const (
	ioRead ioType = iota
	ioWrite
	ioWriteZeroes
	ioDiscard
	ioFlush
	ioBlockStatus
)

var ioTypeNames = []string{"read", "write", "write-zeroes", "discard", "flush", "block-status"}

// defaultIOMask is every type but block-status, QEMU's default.
const defaultIOMask = 1<<ioRead | 1<<ioWrite | 1<<ioWriteZeroes | 1<<ioDiscard | 1<<ioFlush

// Events are QEMU's BlkdebugEvent names: a rule naming another is refused.
var Events = []string{
	"l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
	"l2_load", "l2_update", "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write",
	"read_aio", "read_backing_aio", "read_compressed",
	"write_aio", "write_compressed", "vmstate_load", "vmstate_save", "cow_read", "cow_write",
	"reftable_load", "reftable_grow", "reftable_update",
	"refblock_load", "refblock_update", "refblock_update_part", "refblock_alloc",
	"refblock_alloc_hookup", "refblock_alloc_write", "refblock_alloc_write_blocks",
	"refblock_alloc_write_table", "refblock_alloc_switch_table",
	"cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os", "flush_to_disk",
	"pwritev_rmw_head", "pwritev_rmw_after_head", "pwritev_rmw_tail", "pwritev_rmw_after_tail",
	"pwritev", "pwritev_zero", "pwritev_done", "empty_image_prepare",
	"l1_shrink_write_table", "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
}

// rule is one inject-error or set-state rule.
type rule struct {
	event  string
	state  int64 // 0: any state
	inject bool
	// inject-error
	errno       syscall.Errno
	once        bool
	immediately bool
	offset      int64 // -1: any
	ioMask      uint
	// set-state
	newState int64
}

// newRule checks one section as QEMU's add_rule does.
func newRule(s section) (*rule, error) {
	ev, ok := s.opts["event"]
	if !ok {
		return nil, errors.New("Missing event name for rule")
	}
	if !knownEvent(ev) {
		return nil, fmt.Errorf("invalid parameter value: %s", ev)
	}
	r := &rule{event: ev, inject: s.group == "inject-error", offset: -1, ioMask: defaultIOMask, errno: syscall.EIO}
	var err error
	num := func(key string, def int64) int64 {
		v, ok := s.opts[key]
		if !ok || err != nil {
			return def
		}
		n, perr := strconv.ParseInt(v, 0, 64)
		if perr != nil {
			err = fmt.Errorf("Parameter '%s' expects a number", key)
		}
		return n
	}
	boolean := func(key string) bool {
		v, ok := s.opts[key]
		if !ok || err != nil {
			return false
		}
		switch v {
		case "on", "yes", "true", "y":
			return true
		case "off", "no", "false", "n":
			return false
		}
		err = fmt.Errorf("Parameter '%s' expects 'on' or 'off'", key)
		return false
	}
	r.state = num("state", 0)
	if !r.inject {
		r.newState = num("new_state", 0)
		return r, err
	}
	r.errno = syscall.Errno(num("errno", int64(syscall.EIO)))
	if sector := num("sector", -1); sector != -1 {
		r.offset = sector * 512
	}
	r.once = boolean("once")
	r.immediately = boolean("immediately")
	if t, ok := s.opts["iotype"]; ok && err == nil {
		i := indexOf(ioTypeNames, t)
		if i < 0 {
			return nil, fmt.Errorf("invalid parameter value: %s", t)
		}
		r.ioMask = 1 << uint(i)
	}
	return r, err
}

func knownEvent(ev string) bool { return indexOf(Events, ev) >= 0 }

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}
