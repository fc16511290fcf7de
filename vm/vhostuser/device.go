package vhostuser

import "minivmm/vm/guestmem"

// Device is the virtio device a connection drives.
type Device interface {
	// Features are the virtio feature bits the device offers.
	Features() uint64
	// NumQueues is how many virtqueues the device has.
	NumQueues() int
	// Config is the device's configuration space.
	Config() []byte
	// SetConfig is a driver's write to the configuration space.
	SetConfig(offset uint32, data []byte) error
	// Ack takes the features the driver accepted (a subset of Features).
	Ack(features uint64) error
	// StartQueue starts serving one virtqueue.
	StartQueue(QueueConfig) (Queue, error)
	// Stop makes the device take no more requests on any queue (a
	// queue's Kick running returns soon, whatever the driver does), and
	// waits for those in flight; Start undoes it.
	Stop()
	Start()
	// Reset returns the device to its initial state once a front end
	// reset it or went away (every queue is stopped).
	Reset()
}

// QueueConfig is a virtqueue as the front end set it up.
type QueueConfig struct {
	Index    int
	Mem      *guestmem.Memory
	Size     uint16
	Desc     uint64 // guest-physical addresses of the three parts
	Avail    uint64
	Used     uint64
	Base     uint16 // next available index to take
	Features uint64 // acked features (EVENT_IDX, INDIRECT_DESC)
	// Notify signals the driver that used entries were added (the call
	// eventfd). It is safe to call from any goroutine.
	Notify func()
	// Fail signals the front end that the queue broke (the error
	// eventfd).
	Fail func()
	// Inflight, if not nil, is the queue's region of the inflight file
	// (INFLIGHT_SHMFD): the queue records in it what it takes and
	// returns, and first takes again what a previous back end left
	// there (Base is then the used index plus their number).
	Inflight []byte
}

// Queue is a running virtqueue.
type Queue interface {
	// Kick says the driver has made buffers available.
	Kick()
	// Stop stops taking requests, waits for those in flight to complete
	// into guest memory, and returns the next available index, where a
	// restart resumes (GET_VRING_BASE's answer).
	Stop() uint16
}
