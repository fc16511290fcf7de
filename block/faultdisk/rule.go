package faultdisk

import (
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Kind is a kind of operation a disk takes, as a bit, so that a [Rule]
// can name several.
type Kind uint

const (
	Read Kind = 1 << iota
	Write
	WriteZeroes
	Discard
	Flush
	Truncate

	// Writes are all the kinds that change the contents.
	Writes = Write | WriteZeroes | Discard | Truncate
	// All is every kind.
	All = Read | Writes | Flush
)

var kindNames = map[Kind]string{Read: "read", Write: "write", WriteZeroes: "write-zeroes", Discard: "discard", Flush: "flush", Truncate: "truncate"}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%#x)", uint(k))
}

// Request is one operation as a rule sees it: its kind and the byte range
// it touches (a truncate: between the old and the new size; a flush: none).
type Request struct {
	Kind Kind
	Off  int64
	Len  int64
	// Seq numbers the operation among all the disk has taken, from 0.
	Seq int64
}

// Rule makes a disk fail (or silently drop) the operations it matches.
// The zero Rule fails every operation with EIO. A test keeps the pointer
// it added, to see how often the rule fired.
type Rule struct {
	// Kinds the rule applies to; 0 means all.
	Kinds Kind
	// Off and Len: only operations touching [Off, Off+Len); Len 0 means
	// anywhere. A flush touches no range: a rule with a range never
	// matches it.
	Off, Len int64
	// After lets this many matching operations through before the rule
	// fires ("fail the 3rd flush": Kinds Flush, After 2).
	After int64
	// Times is how often the rule fires before it is spent; 0 is always.
	Times int64
	// Err is the error a fired rule returns; nil means EIO. Use
	// unix.ENOSPC for a full file system. A failed operation changes
	// nothing; a failed flush persists nothing, and what it should have
	// made durable stays pending for the next one (kinder than Linux,
	// where a failed fsync may drop the pages it could not write).
	Err error
	// Drop makes a fired rule report success without doing anything: a
	// write that is lost, or a flush that makes nothing durable (a
	// missing fdatasync, as far as the power-loss layer can tell).
	Drop bool
	// Match, if set, is a further condition on the request.
	Match func(Request) bool

	seen  atomic.Int64 // matching operations
	fired atomic.Int64
}

// Fired is how many times the rule has fired.
func (r *Rule) Fired() int64 { return r.fired.Load() }

// matches reports whether r applies to q at all (before After and Times).
func (r *Rule) matches(q Request) bool {
	if r.Kinds != 0 && r.Kinds&q.Kind == 0 {
		return false
	}
	if r.Len > 0 && (q.Len == 0 || q.Off >= r.Off+r.Len || r.Off >= q.Off+q.Len) {
		return false
	}
	return r.Match == nil || r.Match(q)
}

// decide counts q against r and says whether r fires for it. It runs
// under the disk's lock.
func (r *Rule) decide(q Request) bool {
	if !r.matches(q) {
		return false
	}
	n := r.seen.Add(1)
	if n <= r.After {
		return false
	}
	if r.Times > 0 && r.fired.Load() >= r.Times {
		return false
	}
	r.fired.Add(1)
	return true
}

func (r *Rule) err() error {
	if r.Err == nil {
		return unix.EIO
	}
	return r.Err
}
