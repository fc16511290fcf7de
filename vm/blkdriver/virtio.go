// Package blkdriver is minivmm's built-in guest's virtio-blk driver: the
// driver side of split virtqueues (virtio 1.x, section 2.7) and of the
// block device (section 5.2), written from the specification apart from
// minivmm's device model, so that each checks the other.
//
// The driver lives in guest memory like a real one: its descriptor
// tables, rings, request headers and data buffers are all in the []byte
// view of the guest's memory that a [Memory] hands out, at guest-physical
// addresses the device resolves on its own. It reaches the device only
// through a [Transport].
package blkdriver

import "errors"

// Device feature bits (virtio 1.x 5.2.3 and 6).
const (
	FeatSizeMax     = 1
	FeatSegMax      = 2
	FeatGeometry    = 4
	FeatRO          = 5
	FeatBlkSize     = 6
	FeatFlush       = 9
	FeatTopology    = 10
	FeatConfigWCE   = 11
	FeatMQ          = 12
	FeatDiscard     = 13
	FeatWriteZeroes = 14
	FeatIndirect    = 28 // VIRTIO_RING_F_INDIRECT_DESC
	FeatEventIdx    = 29 // VIRTIO_RING_F_EVENT_IDX
	FeatVersion1    = 32
)

// Bit is the feature mask of a feature bit number.
func Bit(f uint) uint64 { return 1 << f }

// supported is every feature this driver knows how to use.
var supported = Bit(FeatSizeMax) | Bit(FeatSegMax) | Bit(FeatGeometry) | Bit(FeatRO) |
	Bit(FeatBlkSize) | Bit(FeatFlush) | Bit(FeatTopology) | Bit(FeatConfigWCE) | Bit(FeatMQ) |
	Bit(FeatDiscard) | Bit(FeatWriteZeroes) | Bit(FeatIndirect) | Bit(FeatEventIdx) | Bit(FeatVersion1)

// Request types (5.2.6).
const (
	TypeIn          = 0
	TypeOut         = 1
	TypeFlush       = 4
	TypeGetID       = 8
	TypeDiscard     = 11
	TypeWriteZeroes = 13
)

// Status bytes a device writes at the end of a request (5.2.6).
const (
	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2
)

// IDBytes is the length of a GET_ID reply.
const IDBytes = 20

// SectorSize is virtio-blk's unit of addressing, whatever the block size.
const SectorSize = 512

// RingAddr is where a queue's rings lie in guest memory, and its size.
type RingAddr struct {
	Size              uint16
	Desc, Avail, Used uint64
}

// Transport is how the driver reaches a device: the built-in machine
// calls its device model directly, a vhost-user front end sends messages.
// Its methods follow the order of device initialisation (3.1.1).
type Transport interface {
	// DeviceFeatures is what the device offers.
	DeviceFeatures() (uint64, error)
	// SetFeatures accepts a subset of them; an error is the device
	// refusing it (FEATURES_OK not set).
	SetFeatures(features uint64) error
	// Config reads the device's configuration space.
	Config() ([]byte, error)
	// MaxQueueSize is the largest queue q may have; 0: no such queue.
	MaxQueueSize(q int) int
	// SetupQueue gives the device queue q's rings.
	SetupQueue(q int, r RingAddr) error
	// Start sets DRIVER_OK: from now on the device serves the queues.
	Start() error
	// Kick notifies the device that queue q has new buffers.
	Kick(q int)
	// Interrupt delivers the device's used-buffer notifications for
	// queue q; several may arrive as one.
	Interrupt(q int) <-chan struct{}
	// Reset stops the device; once it returns, the device no longer
	// touches the rings.
	Reset() error
}

// Errors of the driver.
var (
	ErrFeatures = errors.New("blkdriver: device refused the features")
	ErrClosed   = errors.New("blkdriver: disk is closed")
	ErrNoMemory = errors.New("blkdriver: out of guest memory")
)
