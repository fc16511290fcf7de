package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The numbers of the NBD protocol's handshake, from the spec
// (github.com/NetworkBlockDevice/nbd, doc/proto.md). They are written out
// here on purpose rather than imported from minivmm's block/nbdproto: this
// program checks minivmm's server, so it shares no code with it.
const (
	magicNBD       = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt       = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply  = 0x0003e889045565a9
	flagFixedNew   = 1 << 0 // server handshake flag; client flag of the same value
	flagNoZeroes   = 1 << 1
	optGo          = 7
	repAck         = 1
	repInfo        = 3
	repErrBit      = 1 << 31
	infoExport     = 0
	infoBlockSize  = 3
	transReadOnly  = 1 << 1
	maxReplyLength = 64 << 10 // no reply to OPT_GO is near this; a bigger one is a broken server
)

// export is what OPT_GO told about the export.
type export struct {
	size                     uint64
	flags                    uint16 // transmission flags, as the kernel takes them
	minBlock, prefBlock, max uint32 // zero when the server sent no NBD_INFO_BLOCK_SIZE
}

// negotiate runs the fixed newstyle handshake with OPT_GO for name on
// conn and returns the export, leaving conn at the start of the
// transmission phase.
func negotiate(conn io.ReadWriter, name string) (export, error) {
	var e export
	var greet struct {
		Magic, Opt uint64
		Flags      uint16
	}
	if err := binary.Read(conn, binary.BigEndian, &greet); err != nil {
		return e, fmt.Errorf("reading the server's greeting: %w", err)
	}
	if greet.Magic != magicNBD {
		return e, fmt.Errorf("bad magic %#x: not an NBD server", greet.Magic)
	}
	if greet.Opt != magicOpt {
		return e, fmt.Errorf("greeting %#x: not a newstyle server (oldstyle is not supported)", greet.Opt)
	}
	if greet.Flags&flagFixedNew == 0 {
		return e, errors.New("the server does not speak fixed newstyle")
	}
	client := uint32(flagFixedNew)
	if greet.Flags&flagNoZeroes != 0 {
		client |= flagNoZeroes
	}
	// OPT_GO: the name, then the one information request we have.
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 1)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	msg := binary.BigEndian.AppendUint32(nil, client)
	msg = binary.BigEndian.AppendUint64(msg, magicOpt)
	msg = binary.BigEndian.AppendUint32(msg, optGo)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(data)))
	msg = append(msg, data...)
	if _, err := conn.Write(msg); err != nil {
		return e, fmt.Errorf("sending NBD_OPT_GO: %w", err)
	}
	haveExport := false
	for {
		var rep struct {
			Magic        uint64
			Opt, Type, N uint32
		}
		if err := binary.Read(conn, binary.BigEndian, &rep); err != nil {
			return e, fmt.Errorf("reading the reply to NBD_OPT_GO: %w", err)
		}
		if rep.Magic != magicOptReply {
			return e, fmt.Errorf("option reply magic %#x", rep.Magic)
		}
		if rep.Opt != optGo {
			return e, fmt.Errorf("reply for option %d to NBD_OPT_GO", rep.Opt)
		}
		if rep.N > maxReplyLength {
			return e, fmt.Errorf("reply of %d bytes to NBD_OPT_GO", rep.N)
		}
		body := make([]byte, rep.N)
		if _, err := io.ReadFull(conn, body); err != nil {
			return e, fmt.Errorf("reading the reply to NBD_OPT_GO: %w", err)
		}
		switch {
		case rep.Type&repErrBit != 0:
			return e, fmt.Errorf("the server refused export %q: error %#x %q", name, rep.Type, body)
		case rep.Type == repAck:
			if len(body) != 0 {
				return e, fmt.Errorf("NBD_REP_ACK with %d bytes of data", len(body))
			}
			if !haveExport {
				return e, errors.New("NBD_REP_ACK without NBD_INFO_EXPORT")
			}
			return e, nil
		case rep.Type == repInfo:
			if len(body) < 2 {
				return e, fmt.Errorf("NBD_REP_INFO of %d bytes", len(body))
			}
			switch info := binary.BigEndian.Uint16(body); info {
			case infoExport:
				if len(body) != 12 {
					return e, fmt.Errorf("NBD_INFO_EXPORT of %d bytes", len(body))
				}
				e.size = binary.BigEndian.Uint64(body[2:])
				e.flags = binary.BigEndian.Uint16(body[10:])
				haveExport = true
			case infoBlockSize:
				if len(body) != 14 {
					return e, fmt.Errorf("NBD_INFO_BLOCK_SIZE of %d bytes", len(body))
				}
				e.minBlock = binary.BigEndian.Uint32(body[2:])
				e.prefBlock = binary.BigEndian.Uint32(body[6:])
				e.max = binary.BigEndian.Uint32(body[10:])
			}
			// Other information (name, description) is not needed.
		default:
			return e, fmt.Errorf("unexpected reply type %d to NBD_OPT_GO", rep.Type)
		}
	}
}

// blockSize is the kernel block size for e: the server's preferred size
// where the kernel takes it (a power of two in [512, 4096]), else 512.
func blockSize(e export) uint32 {
	b := e.prefBlock
	if b < 512 || b > 4096 || b&(b-1) != 0 || b < e.minBlock {
		b = 512
	}
	return b
}
