package monitor

import "errors"

// This file splits the byte stream a QMP client sends into messages, the
// way QEMU's JSON lexer and streamer (qobject/json-lexer.c,
// qobject/json-streamer.c) find message boundaries:
//
//   - An object or array is one message; it ends when the nesting of
//     braces and brackets outside strings returns to zero. Newlines are not
//     needed between messages.
//   - Strings are delimited by '"' or, as QEMU extends JSON, by '\''; a
//     backslash escapes the byte after it.
//   - Any other top-level token is a message of its own: a string ends at
//     its closing quote; a bare scalar (number, keyword, or garbage) ends
//     before whitespace, a quote or one of { } [ ] , : ; a stray } ] , or :
//     is a one-byte message. The parser rejects what is not an object.
//   - A lexical error abandons the message in progress: an ASCII control
//     character other than tab, CR and LF, or one of the bytes 0xFE and
//     0xFF (never valid in UTF-8), anywhere; inside a string also tab, CR
//     and LF. Like QEMU, the Framer answers each with "JSON parse error,
//     stray '...'" (quoting the string read so far and the byte, or just
//     the byte), then skips input until a structural character, a control
//     character, or 0xFE/0xFF. qmp-spec tells clients to send such a byte
//     (0xFF for old QEMU) to get the parser back into a known state.
//     Other bytes QEMU's lexer rejects ('@', 'A', non-ASCII outside
//     strings, a malformed number) are left for the parser to reject; a
//     bare one at top level is a scalar message as above.
//   - A message larger than maxSize bytes or nested deeper than maxDepth
//     is reported by a single error as soon as the byte that crosses the
//     limit arrives (a client sending 100,000 '[' is answered at the
//     1025th), then followed to its end without being stored, and without
//     further errors. (QEMU reports the limit at once too, but then lexes
//     the rest of the message as new input: one more error per 1025 '['
//     and one per leftover ']', and the next command may be swallowed.)

// Errors of frames that exceeded a limit, in QEMU's words.
var (
	ErrMessageTooLarge = errors.New("JSON token size limit exceeded")
	ErrNestingTooDeep  = errors.New("JSON nesting depth limit exceeded")
)

// StrayError is a lexical error: Token is what QEMU would quote, the
// string read so far and the offending byte, or the byte alone.
type StrayError struct {
	Token []byte
}

func (e *StrayError) Error() string {
	return "JSON parse error, stray '" + string(e.Token) + "'"
}

// Frame is one element of the input stream: a complete message (Data), or
// an error for input that could not be framed (Err): *StrayError,
// ErrMessageTooLarge or ErrNestingTooDeep.
type Frame struct {
	// Data is the message's bytes, from its first to its last byte. It
	// aliases either the slice passed to Feed or the Framer's own buffer,
	// so it is valid until the next call of Feed, and only while the
	// caller leaves the slice it passed to Feed unchanged. Do not modify it.
	Data []byte
	Err  error
}

type lexState uint8

const (
	lexTop     lexState = iota // between tokens: at top level, or in a container outside strings
	lexScalar                  // in a top-level bare scalar
	lexString                  // in a string delimited by Framer.quote
	lexEscape                  // after a backslash in a string
	lexRecover                 // skipping input after a lexical error
)

// Framer splits a QMP input stream into messages. It keeps at most the
// bytes of the message in progress, and none of a message that has
// exceeded a limit; its memory is bounded by about maxSize plus the
// length of one Feed's input. A Framer is not safe for concurrent use.
type Framer struct {
	maxSize  int
	maxDepth int

	state lexState
	quote byte // the current string's delimiter
	depth int  // nesting of the message in progress; can exceed maxDepth
	inMsg bool // a message is in progress
	limit error

	pos    int64 // stream offset of the first byte of the current Feed's input
	msgPos int64 // stream offset of the message's first byte
	strPos int64 // stream offset of the current string's opening quote

	// buf[base:] holds the bytes of the message in progress that came in
	// earlier Feeds (none once it has exceeded a limit); buf[:base] is a
	// message returned by the current Feed.
	buf  []byte
	base int

	frames []Frame
}

// NewFramer returns a Framer for messages of at most maxSize bytes,
// nested at most maxDepth deep (QEMU: 1024).
func NewFramer(maxSize, maxDepth int) *Framer {
	return &Framer{maxSize: maxSize, maxDepth: maxDepth}
}

// Pending reports whether a message has begun and not yet ended: a client
// disconnecting now would leave it incomplete. Input being skipped after a
// lexical error is not a message.
func (f *Framer) Pending() bool { return f.inMsg }

// keepBuf is the buffer capacity kept between messages; a larger buffer,
// grown for a large message, is released when the message has ended.
const keepBuf = 64 << 10

// Feed consumes p and returns the frames it completed, in order. The
// returned slice and the Data in it are valid until the next call of Feed;
// Data may alias p, so the caller must not change p before it is done with
// them. A message that p leaves incomplete is kept for the next Feed.
func (f *Framer) Feed(p []byte) []Frame {
	clear(f.frames) // drop references to the previous Feed's data
	f.frames = f.frames[:0]
	if f.base > 0 {
		n := copy(f.buf, f.buf[f.base:])
		f.buf = f.buf[:n]
		f.base = 0
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch f.state {
		case lexString:
			switch {
			case c == f.quote:
				f.state = lexTop
				if f.depth == 0 {
					f.end(p, i+1)
				}
			case c == '\\':
				f.state = lexEscape
			case c < 0x20 || c >= 0xfe:
				f.stray(p, i)
			}
			continue
		case lexEscape:
			if c < 0x20 || c >= 0xfe {
				f.stray(p, i)
			} else {
				f.state = lexString
			}
			continue
		case lexScalar:
			if !endsScalar(c) {
				continue
			}
			f.end(p, i) // and look at c afresh
		case lexRecover:
			if c == '\t' || c >= 0x20 && c < 0xfe && !isStructural(c) {
				continue
			}
			f.state = lexTop
		}

		// lexTop
		switch c {
		case ' ', '\t', '\r', '\n':
		case '"', '\'':
			if f.depth == 0 {
				f.begin(i)
			}
			f.state = lexString
			f.quote = c
			f.strPos = f.pos + int64(i)
		case '{', '[':
			if f.depth == 0 {
				f.begin(i)
			}
			f.depth++
			if f.depth > f.maxDepth && f.limit == nil {
				if f.pos+int64(i)+1-f.msgPos > int64(f.maxSize) {
					f.exceed(ErrMessageTooLarge) // exceeded before the depth was
				} else {
					f.exceed(ErrNestingTooDeep)
				}
			}
		case '}', ']', ',', ':':
			if f.depth == 0 { // a stray one: a message of its own
				f.begin(i)
				f.end(p, i+1)
			} else if c == '}' || c == ']' {
				f.depth--
				if f.depth == 0 {
					f.end(p, i+1)
				}
			}
		default:
			if c < 0x20 || c >= 0xfe {
				f.stray(p, i)
			} else if f.depth == 0 {
				f.begin(i)
				f.state = lexScalar
			}
		}
	}
	f.save(p)
	return f.frames
}

// endsScalar reports whether c ends a top-level bare scalar (and starts
// the next token).
func endsScalar(c byte) bool {
	return c <= ' ' || c >= 0xfe || c == '"' || c == '\'' || isStructural(c)
}

func isStructural(c byte) bool {
	switch c {
	case '{', '}', '[', ']', ',', ':':
		return true
	}
	return false
}

// begin starts a message at p[i].
func (f *Framer) begin(i int) {
	f.inMsg = true
	f.msgPos = f.pos + int64(i)
	f.limit = nil
}

// exceed reports that the message in progress has exceeded a limit; the
// rest of it is skipped.
func (f *Framer) exceed(err error) {
	f.limit = err
	f.frames = append(f.frames, Frame{Err: err})
	f.buf = f.buf[:f.base]
}

// end completes the message in progress; p[j-1] is its last byte.
func (f *Framer) end(p []byte, j int) {
	if f.limit == nil && f.pos+int64(j)-f.msgPos > int64(f.maxSize) {
		f.exceed(ErrMessageTooLarge)
	}
	switch {
	case f.limit != nil: // reported when it was exceeded
		f.buf = f.buf[:f.base]
	case f.msgPos >= f.pos: // all of it is in p
		start := int(f.msgPos - f.pos)
		f.frames = append(f.frames, Frame{Data: p[start:j:j]})
	default:
		f.buf = append(f.buf, p[:j]...)
		n := len(f.buf)
		f.frames = append(f.frames, Frame{Data: f.buf[f.base:n:n]})
		f.base = n
	}
	f.reset()
}

// stray reports the lexical error at p[i], abandoning the message in
// progress, and skips what follows. A message that has exceeded a limit
// has had its one error already.
func (f *Framer) stray(p []byte, i int) {
	var err error
	switch {
	case f.inMsg && f.limit == nil && f.pos+int64(i)-f.msgPos > int64(f.maxSize):
		err = ErrMessageTooLarge
	case f.inMsg && f.limit != nil:
	case f.state == lexString || f.state == lexEscape:
		var tok []byte
		if f.strPos < f.pos { // the string began in an earlier Feed
			tok = append(tok, f.buf[f.base+int(f.strPos-f.msgPos):]...)
			tok = append(tok, p[:i+1]...)
		} else {
			tok = append(tok, p[f.strPos-f.pos:i+1]...)
		}
		err = &StrayError{Token: tok}
	default:
		err = &StrayError{Token: []byte{p[i]}}
	}
	if err != nil {
		f.frames = append(f.frames, Frame{Err: err})
	}
	f.buf = f.buf[:f.base]
	f.reset()
	f.state = lexRecover
}

func (f *Framer) reset() {
	f.state = lexTop
	f.depth = 0
	f.inMsg = false
	f.limit = nil
}

// save keeps the part in p of the message in progress, unless the message
// has outgrown maxSize, and moves the stream offset past p.
func (f *Framer) save(p []byte) {
	if f.inMsg && f.limit == nil {
		start := 0
		if f.msgPos > f.pos {
			start = int(f.msgPos - f.pos)
		}
		if f.pos+int64(len(p))-f.msgPos > int64(f.maxSize) {
			f.exceed(ErrMessageTooLarge)
		} else {
			f.buf = append(f.buf, p[start:]...)
		}
	}
	if (!f.inMsg || f.limit != nil) && cap(f.buf) > keepBuf {
		f.buf, f.base = nil, 0
	}
	f.pos += int64(len(p))
}
