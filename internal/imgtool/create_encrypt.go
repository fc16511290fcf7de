package imgtool

import (
	"errors"
	"fmt"

	"minivmm/block/objects"
	"minivmm/cmdline"
)

// encryptKeys are qcow2's encryption create options in the order of
// QEMU's option list, which is the order its "Formatting" line prints
// them in (first, before cluster_size).
var encryptKeys = []struct {
	name string
	kind cmdline.Kind
}{
	{"encryption", cmdline.OptBool},
	{"encrypt.format", cmdline.OptString},
	{"encrypt.key-secret", cmdline.OptString},
	{"encrypt.cipher-alg", cmdline.OptString},
	{"encrypt.cipher-mode", cmdline.OptString},
	{"encrypt.ivgen-alg", cmdline.OptString},
	{"encrypt.ivgen-hash-alg", cmdline.OptString},
	{"encrypt.hash-alg", cmdline.OptString},
	{"encrypt.iter-time", cmdline.OptNumber},
}

// errNoEncryption is minivmm's refusal of an encrypted image that QEMU
// would make, in the words QEMU's qcow2 driver uses for an encryption
// format it cannot make.
var errNoEncryption = errors.New("Crypto format not supported in qcow2")

// checkEncryption reads the encryption options as QEMU's qcow2 create
// does, failing with QEMU's message for options it refuses, and with
// errNoEncryption where QEMU would encrypt. encryption=off alone is no
// encryption.
func checkEncryption(objs *objects.Registry, opts *cmdline.Opts) error {
	enc, encGiven := opts.Get("encryption")
	format, formatGiven := opts.Get("encrypt.format")
	if encGiven && enc == "off" {
		encGiven = false
	}
	if encGiven && formatGiven {
		return errors.New("'encrypt.format' and its alias 'encryption' can't be used at the same time")
	}
	if encGiven {
		format, formatGiven = "aes", true
	}
	any := formatGiven
	for _, k := range encryptKeys[2:] {
		if _, ok := opts.Get(k.name); ok {
			any = true
		}
	}
	if !any {
		return nil
	}
	switch {
	case !formatGiven:
		return errors.New("Parameter 'encrypt.format' is missing")
	case format != "aes" && format != "qcow" && format != "luks":
		return fmt.Errorf("Parameter 'format' does not accept value '%s'", format)
	}
	secret, ok := opts.Get("encrypt.key-secret")
	if !ok {
		return errors.New("Parameter 'encrypt.key-secret' is required for cipher")
	}
	if objs == nil {
		return fmt.Errorf("No secret with id '%s'", secret)
	}
	if o, ok := objs.Get(secret); !ok || o.Type() != "secret" {
		return fmt.Errorf("No secret with id '%s'", secret)
	}
	return errNoEncryption
}
