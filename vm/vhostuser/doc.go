// Package vhostuser speaks the vhost-user protocol (QEMU's
// docs/interop/vhost-user.rst) as a back end: a front end such as QEMU's
// vhost-user-blk-pci connects to a unix socket, hands over its guest
// memory and the virtqueues' eventfds, and the back end serves the queues
// with a virtio device model. Every fd a front end sends is owned by the
// connection that received it and closed when replaced, on reset, on a
// bad message and on disconnect.
package vhostuser
