package qemuiotests

// The bash iotests of QEMU 7.2 that pass with minivmm as qemu-img/qemu-io
// (the others: README, "QEMU's iotests").
var qcow2Tests = []string{"001", "002"}

var rawTests = []string{"001", "002"}
