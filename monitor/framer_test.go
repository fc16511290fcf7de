package monitor

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// frameText renders a frame for comparison: "D:" and the data, or "E:" and
// the error text.
func frameText(fr Frame) string {
	if fr.Err != nil {
		if fr.Data != nil {
			return "BOTH:" + string(fr.Data) + "|" + fr.Err.Error()
		}
		return "E:" + fr.Err.Error()
	}
	return "D:" + string(fr.Data)
}

// feedChunks feeds the chunks in order and returns what was framed, copied
// out before each next Feed as Data is only valid until then.
func feedChunks(f *Framer, chunks [][]byte) []string {
	var out []string
	for _, c := range chunks {
		// Give Feed its own copy and scribble over it afterwards: frames
		// must not depend on p once the next Feed has been called...
		p := bytes.Clone(c)
		for _, fr := range f.Feed(p) {
			out = append(out, frameText(fr))
		}
		// ...so the caller may reuse its read buffer.
		for i := range p {
			p[i] = 'X'
		}
	}
	return out
}

func splitAt(in []byte, cuts ...int) [][]byte {
	var chunks [][]byte
	prev := 0
	for _, c := range cuts {
		chunks = append(chunks, in[prev:c])
		prev = c
	}
	return append(chunks, in[prev:])
}

func bytewise(in []byte) [][]byte {
	chunks := make([][]byte, len(in))
	for i := range in {
		chunks[i] = in[i : i+1]
	}
	return chunks
}

const (
	tooLarge = "E:JSON token size limit exceeded"
	tooDeep  = "E:JSON nesting depth limit exceeded"
)

func stray(tok string) string { return "E:JSON parse error, stray '" + tok + "'" }

type framerCase struct {
	name        string
	in          string
	maxSize     int // 0: 4 MiB
	maxDepth    int // 0: 1024
	want        []string
	wantPending bool
}

var framerCases = []framerCase{
	{name: "empty", in: ""},
	{name: "whitespace only", in: " \t\r\n  \n"},
	{name: "one object", in: `{"execute":"qmp_capabilities"}`,
		want: []string{`D:{"execute":"qmp_capabilities"}`}},
	{name: "two objects, no separator", in: `{"execute":"a"}{"execute":"b","id":2}`,
		want: []string{`D:{"execute":"a"}`, `D:{"execute":"b","id":2}`}},
	{name: "whitespace between and inside", in: " \r\n{ \"a\" :\n 1 }\r\n\t[1, 2]  \n",
		want: []string{"D:{ \"a\" :\n 1 }", "D:[1, 2]"}},
	{name: "nested", in: `{"a":{"b":[1,{"c":[]}]}} {}`,
		want: []string{`D:{"a":{"b":[1,{"c":[]}]}}`, `D:{}`}},
	{name: "mismatched closers count together", in: `{] [}`,
		want: []string{`D:{]`, `D:[}`}},
	{name: "braces in string", in: `{"id":"}{]["}{"x":"{"}`,
		want: []string{`D:{"id":"}{]["}`, `D:{"x":"{"}`}},
	{name: "escaped quote", in: `{"id":"a\"}b"}{}`,
		want: []string{`D:{"id":"a\"}b"}`, `D:{}`}},
	{name: "escaped backslash before quote", in: `{"id":"a\\"}{}`,
		want: []string{`D:{"id":"a\\"}`, `D:{}`}},
	{name: "backslashes and quotes", in: `{"id":"\\\"\\"}[]`,
		want: []string{`D:{"id":"\\\"\\"}`, `D:[]`}},
	{name: "single-quoted strings", in: `{'execute':'query-status'}`,
		want: []string{`D:{'execute':'query-status'}`}},
	{name: "single quote with escaped quote and brace", in: `{'id':'it\'s }'}{}`,
		want: []string{`D:{'id':'it\'s }'}`, `D:{}`}},
	{name: "apostrophe in double quotes", in: `{"id":"it's }"}{}`,
		want: []string{`D:{"id":"it's }"}`, `D:{}`}},
	{name: "double quote in single quotes", in: `{'id':'say "}" '}{}`,
		want: []string{`D:{'id':'say "}" '}`, `D:{}`}},
	{name: "UTF-8 in strings", in: `{"id":"é☃😀"}`,
		want: []string{`D:{"id":"é☃😀"}`}},
	{name: "scalars", in: "1 2.5\n-3e+4\ttrue false null \"str\" 'sq' ",
		want: []string{"D:1", "D:2.5", "D:-3e+4", "D:true", "D:false", "D:null", `D:"str"`, "D:'sq'"}},
	{name: "scalar ends at brace", in: `12{"a":1}`,
		want: []string{"D:12", `D:{"a":1}`}},
	{name: "string then object", in: `"x"{"a":1}"y"'z'`,
		want: []string{`D:"x"`, `D:{"a":1}`, `D:"y"`, `D:'z'`}},
	{name: "scalar ends at quote", in: `abc"x"`,
		want: []string{"D:abc", `D:"x"`}},
	{name: "garbage", in: "abc\n@@@ {}é[]ABC]",
		want: []string{"D:abc", "D:@@@", "D:{}", "D:é", "D:[]", "D:ABC", "D:]"}},
	{name: "stray closers", in: "} ]]}",
		want: []string{"D:}", "D:]", "D:]", "D:}"}},
	{name: "stray separators", in: ", :,1:2\n",
		want: []string{"D:,", "D::", "D:,", "D:1", "D::", "D:2"}},
	{name: "malformed object is framed", in: `{"execute": }`,
		want: []string{`D:{"execute": }`}},
	{name: "pending object", in: `{"execute":"query-status"`, wantPending: true},
	{name: "pending string in object", in: `{"execute":"query-st`, wantPending: true},
	{name: "pending escape", in: `{"execute":"query-st\`, wantPending: true},
	{name: "pending scalar", in: `abc`, wantPending: true},
	{name: "pending top-level string", in: `"abc`, wantPending: true},
	{name: "complete then pending", in: `{}{"a":[`, want: []string{"D:{}"}, wantPending: true},
	{name: "control bytes at top level", in: "\x01\x02{}",
		want: []string{stray("\x01"), stray("\x02"), "D:{}"}},
	{name: "0xFF at top level", in: "\xff{}",
		want: []string{stray("\xff"), "D:{}"}},
	{name: "0xFF in string abandons message", in: "{\"execute\": \"query-st\xff{\"execute\":\"query-status\"}",
		want: []string{stray("\"query-st\xff"), `D:{"execute":"query-status"}`}},
	{name: "0xFE in string", in: "{'a':'b\xfe}[]",
		want: []string{stray("'b\xfe"), "D:}", "D:[]"}},
	{name: "0xFF in object outside string", in: "{\"a\": 1\xff {}",
		want: []string{stray("\xff"), "D:{}"}},
	{name: "control byte in object", in: "[1,\x00 2]\n[]",
		want: []string{stray("\x00"), "D:]", "D:[]"}},
	{name: "recovery skips to structural character", in: "\x01abc \"x\" 'y {}",
		want: []string{stray("\x01"), "D:{}"}},
	{name: "recovery stops at control character", in: "\x01abc\n12 \x7f \x02x,",
		want: []string{stray("\x01"), "D:12", "D:\x7f", stray("\x02"), "D:,"}},
	{name: "newline in string", in: "{\"id\":\"a\nb\"}\n{}",
		want: []string{stray("\"a\n"), "D:}", "D:{}"}},
	{name: "tab in string", in: "{\"id\":\"a\tb\"}{}",
		want: []string{stray("\"a\t"), "D:}", "D:{}"}},
	{name: "control byte after backslash", in: "{\"id\":\"a\\\x01\"}{}",
		want: []string{stray("\"a\\\x01"), "D:}", "D:{}"}},
	{name: "tab, CR, LF outside strings are whitespace", in: "{\t\"a\"\r:\n1}",
		want: []string{"D:{\t\"a\"\r:\n1}"}},
	{name: "scalar then stray byte", in: "abc\x01{}",
		want: []string{"D:abc", stray("\x01"), "D:{}"}},
	{name: "top-level string with control byte", in: "\"ab\x1f\"{}",
		want: []string{stray("\"ab\x1f"), "D:{}"}},
	{name: "too large object", in: `{"a":"0123456789"}{}`, maxSize: 10,
		want: []string{tooLarge, "D:{}"}},
	{name: "exactly maxSize", in: `{"a":"12"} {"a":"123"} []`, maxSize: 10,
		want: []string{`D:{"a":"12"}`, tooLarge, "D:[]"}},
	{name: "too large scalar", in: "1234567890 12345678901 1 ", maxSize: 10,
		want: []string{"D:1234567890", tooLarge, "D:1"}},
	{name: "too large string", in: `"12345678" "123456789" ""`, maxSize: 10,
		want: []string{`D:"12345678"`, tooLarge, `D:""`}},
	{name: "too large with braces in strings", in: `{"a":"{{{{{{{{{{{{"} {}`, maxSize: 10,
		want: []string{tooLarge, "D:{}"}},
	{name: "too large then stray byte", in: "{\"a\":\"0123456789\xff{}", maxSize: 10,
		want: []string{tooLarge, "D:{}"}},
	{name: "exactly maxSize then stray byte", in: "[1,2,3,4,5\xff{}", maxSize: 10,
		want: []string{stray("\xff"), "D:{}"}},
	{name: "pending too large", in: `{"a":"0123456789`, maxSize: 10, want: []string{tooLarge}, wantPending: true},
	{name: "exactly maxDepth", in: `[[[1]]] {"a":{"b":{}}}`, maxDepth: 3,
		want: []string{"D:[[[1]]]", `D:{"a":{"b":{}}}`}},
	{name: "too deep", in: `[[[[1]]]] {"a":{"b":{"c":{}}}} [[[]]]`, maxDepth: 3,
		want: []string{tooDeep, tooDeep, "D:[[[]]]"}},
	{name: "too deep then stray byte", in: "[[[[\x01{}", maxDepth: 3,
		want: []string{tooDeep, "D:{}"}},
	{name: "too large before too deep", in: `["0123456789",[[[]]]]`, maxSize: 10, maxDepth: 3,
		want: []string{tooLarge}},
	{name: "too deep before too large", in: `[[[["0123456789"]]]]`, maxSize: 10, maxDepth: 3,
		want: []string{tooDeep}},
	{name: "QEMU depth 1024", in: strings.Repeat("[", 1024) + strings.Repeat("]", 1024),
		want: []string{"D:" + strings.Repeat("[", 1024) + strings.Repeat("]", 1024)}},
	{name: "QEMU depth 1025", in: strings.Repeat("[", 1025) + strings.Repeat("]", 1025) + "{}",
		want: []string{tooDeep, "D:{}"}},
	{name: "100000 [ then their ]", in: strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `{"execute":"x"}`,
		want: []string{tooDeep, `D:{"execute":"x"}`}},
	// Reported at once, before the message ends (if it ever does).
	{name: "100000 [ pending", in: strings.Repeat("[", 100000), want: []string{tooDeep}, wantPending: true},
	{name: "too deep, pending", in: `[[[[`, maxDepth: 3, want: []string{tooDeep}, wantPending: true},
	{name: "too deep swallows what follows until it ends", in: `[[[[ {"execute":"x"} ]]]] {}`, maxDepth: 3,
		want: []string{tooDeep, "D:{}"}},
	{name: "too deep, then a stray byte ends it", in: "[[[[[[\xff{}", maxDepth: 3,
		want: []string{tooDeep, "D:{}"}},
}

func (tc framerCase) framer() *Framer {
	size, depth := tc.maxSize, tc.maxDepth
	if size == 0 {
		size = 4 << 20
	}
	if depth == 0 {
		depth = 1024
	}
	return NewFramer(size, depth)
}

func TestFramer(t *testing.T) {
	for _, tc := range framerCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			check := func(how string, chunks [][]byte) {
				t.Helper()
				f := tc.framer()
				got := feedChunks(f, chunks)
				if !equalStrings(got, tc.want) {
					t.Errorf("%s:\n got %q\nwant %q", how, got, tc.want)
				}
				if f.Pending() != tc.wantPending {
					t.Errorf("%s: Pending() = %v, want %v", how, f.Pending(), tc.wantPending)
				}
			}
			check("one Feed", [][]byte{in})
			if len(in) > 2000 {
				// Long inputs: a few splits and 7-byte chunks suffice.
				for _, i := range []int{1, len(in) / 2, len(in) - 1} {
					check(fmt.Sprintf("split at %d", i), splitAt(in, i))
				}
				var chunks [][]byte
				for i := 0; i < len(in); i += 7 {
					chunks = append(chunks, in[i:min(i+7, len(in))])
				}
				check("7-byte chunks", chunks)
				return
			}
			check("byte by byte", bytewise(in))
			for i := 0; i <= len(in); i++ {
				check(fmt.Sprintf("split at %d", i), splitAt(in, i))
				for j := i; j <= len(in); j += 3 {
					check(fmt.Sprintf("split at %d,%d", i, j), splitAt(in, i, j))
				}
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestFramerErrors(t *testing.T) {
	f := NewFramer(4, 2)
	frames := f.Feed([]byte("[[[]]] 12345 \"ab\x01 \xff"))
	if len(frames) != 4 {
		t.Fatalf("got %d frames, want 4", len(frames))
	}
	if !errors.Is(frames[0].Err, ErrNestingTooDeep) {
		t.Errorf("frame 0: %v, want ErrNestingTooDeep", frames[0].Err)
	}
	if !errors.Is(frames[1].Err, ErrMessageTooLarge) {
		t.Errorf("frame 1: %v, want ErrMessageTooLarge", frames[1].Err)
	}
	for i, tok := range []string{"\"ab\x01", "\xff"} {
		var se *StrayError
		if !errors.As(frames[2+i].Err, &se) || string(se.Token) != tok {
			t.Errorf("frame %d: %v, want stray %q", 2+i, frames[2+i].Err, tok)
		}
	}
	for i, fr := range frames {
		if fr.Data != nil {
			t.Errorf("frame %d has both Err and Data", i)
		}
	}
}

// TestFramerSpanningString checks the stray token of a string that began
// several Feeds earlier, and of one that began after a message that ended
// in the same Feed.
func TestFramerSpanningString(t *testing.T) {
	f := NewFramer(100, 10)
	got := feedChunks(f, [][]byte{[]byte(`{"a":`), []byte(`"bc`), []byte(`de`), []byte("f\x01g\"}\n{}")})
	want := []string{stray("\"bcdef\x01"), "D:}", "D:{}"}
	if !equalStrings(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	got = feedChunks(f, [][]byte{[]byte(`{"a":"b`), []byte("c\"} {\"d\":\"e\x01")})
	want = []string{`D:{"a":"bc"}`, stray("\"e\x01")}
	if !equalStrings(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestFramerDataValidity checks that frames returned by a Feed stay intact
// until the next Feed, also when one of them came from earlier Feeds and
// another message is left pending.
func TestFramerDataValidity(t *testing.T) {
	f := NewFramer(1<<10, 10)
	f.Feed([]byte(`{"a":"first`))
	frames := f.Feed([]byte(`"}{"b":2}{"c":"third`))
	want := []string{`D:{"a":"first"}`, `D:{"b":2}`}
	var got []string
	for _, fr := range frames {
		got = append(got, frameText(fr))
	}
	if !equalStrings(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	frames = f.Feed([]byte(`"}`))
	if len(frames) != 1 || string(frames[0].Data) != `{"c":"third"}` {
		t.Fatalf("got %v", frames)
	}
}

// TestFramerBoundedMemory streams endless messages of each kind and checks
// that the framer's buffer never grows much beyond maxSize, and that it
// recovers after each.
func TestFramerBoundedMemory(t *testing.T) {
	const maxSize = 1000
	const chunk = 4096
	endless := []struct {
		name       string
		start, end string
		fill       byte
	}{
		{"string in object", `{"a":"`, `"}`, 'a'},
		{"nesting", ``, strings.Repeat("]", 20<<20), '['},
		{"top-level scalar", ``, ` `, '7'},
		{"top-level string", `'`, `'`, '{'},
		{"object members", `{"a":[`, `]}`, ','},
	}
	for _, e := range endless {
		t.Run(e.name, func(t *testing.T) {
			f := NewFramer(maxSize, 1024)
			var got []string
			feed := func(p []byte) {
				for _, fr := range f.Feed(p) {
					got = append(got, frameText(fr))
				}
				if c := cap(f.buf); c > maxSize+chunk {
					t.Fatalf("buffer capacity %d", c)
				}
			}
			feed([]byte(e.start))
			fill := bytes.Repeat([]byte{e.fill}, chunk)
			for range (20 << 20) / chunk {
				feed(fill)
				if !f.Pending() {
					t.Fatal("not pending")
				}
			}
			for rest := []byte(e.end); len(rest) > 0; rest = rest[min(chunk, len(rest)):] {
				feed(rest[:min(chunk, len(rest))])
			}
			feed([]byte(`{"execute":"x"}`))
			want := []string{tooLarge, `D:{"execute":"x"}`}
			if !equalStrings(got, want) {
				t.Fatalf("got %q, want %q", got, want)
			}
			if f.Pending() {
				t.Fatal("still pending")
			}
		})
	}
}

// TestFramerReleasesBuffer checks that the buffer grown for a large message
// is not kept after it.
func TestFramerReleasesBuffer(t *testing.T) {
	f := NewFramer(4<<20, 1024)
	msg := []byte(`{"a":"` + strings.Repeat("x", 1<<20) + `"}`)
	for i := 0; i < len(msg); i += 64 << 10 {
		f.Feed(msg[i:min(i+64<<10, len(msg))])
	}
	if f.Pending() || cap(f.buf) > keepBuf {
		t.Fatalf("pending %v, buffer capacity %d", f.Pending(), cap(f.buf))
	}
}

func TestFramerAllocations(t *testing.T) {
	f := NewFramer(4<<20, 1024)
	whole := []byte(`{"execute":"query-status"} {"execute":"query-version","id":1}` + "\r\n")
	a, b := whole[:40], whole[40:]
	f.Feed(whole) // grow the frames slice
	f.Feed(a)     // and the buffer
	f.Feed(b)
	if n := testing.AllocsPerRun(100, func() { f.Feed(whole) }); n != 0 {
		t.Errorf("Feed of whole messages: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() { f.Feed(a); f.Feed(b) }); n != 0 {
		t.Errorf("Feed of split messages: %v allocations", n)
	}
}

func BenchmarkFramer(b *testing.B) {
	msg := []byte(`{"execute":"blockdev-add","arguments":{"driver":"file","node-name":"disk0","filename":"/var/lib/images/a \"quoted\" name.qcow2"},"id":"c1"}` + "\n")
	in := bytes.Repeat(msg, (64<<10)/len(msg))
	f := NewFramer(4<<20, 1024)
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		f.Feed(in[:len(in)/3])
		f.Feed(in[len(in)/3:])
	}
}

// checkBalanced reports why data, a framed object or array, is not one
// balanced value with closed strings and no byte QEMU's lexer rejects.
func checkBalanced(data []byte, maxDepth int) error {
	depth := 0
	var quote byte
	escaped := false
	for i, c := range data {
		if quote != 0 {
			switch {
			case c < 0x20 || c >= 0xfe:
				return fmt.Errorf("byte %#x in string at %d", c, i)
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == quote:
				quote = 0
			}
			continue
		}
		switch {
		case c == '"' || c == '\'':
			quote = c
		case c == '{' || c == '[':
			depth++
			if depth > maxDepth {
				return fmt.Errorf("depth %d at %d", depth, i)
			}
		case c == '}' || c == ']':
			depth--
			if depth < 0 || depth == 0 && i != len(data)-1 {
				return fmt.Errorf("depth %d at %d of %d", depth, i, len(data))
			}
		case c < 0x20 && c != '\t' && c != '\r' && c != '\n' || c >= 0xfe:
			return fmt.Errorf("byte %#x at %d", c, i)
		}
	}
	if depth != 0 || quote != 0 {
		return fmt.Errorf("unterminated: depth %d, quote %q", depth, quote)
	}
	return nil
}

func FuzzFramer(f *testing.F) {
	for _, tc := range framerCases {
		if len(tc.in) < 4096 {
			f.Add([]byte(tc.in), uint64(len(tc.in)), uint16(0x0340))
		}
	}
	f.Add([]byte(`{"a":"b\\"}[']'] "x\"" 'y\''`), uint64(7), uint16(0x0210))
	f.Add([]byte("{\"a\":\"b\xff\" \x01 {} ]"), uint64(3), uint16(0x0105))
	f.Add([]byte(strings.Repeat("[", 40)+`{"execute":"x"}`+strings.Repeat("]", 40)+"{}"), uint64(5), uint16(0x0720))
	f.Add([]byte("[{'a':[[\"]\"]]}]\xff[[[[[{}"), uint64(9), uint16(0x0240))
	f.Fuzz(func(t *testing.T, in []byte, seed uint64, limits uint16) {
		maxSize := 1 + int(limits&0xff)*4 // 1..1021
		maxDepth := int(limits>>8) % 16   // 0..15

		run := func(chunks [][]byte) ([]string, bool) {
			fr := NewFramer(maxSize, maxDepth)
			return feedChunks(fr, chunks), fr.Pending()
		}
		want, wantPending := run([][]byte{in})

		rng := rand.New(rand.NewPCG(seed, uint64(len(in))))
		var chunks [][]byte
		for rest := in; len(rest) > 0; {
			n := 1 + rng.IntN(min(len(rest), 1+rng.IntN(64)))
			chunks = append(chunks, rest[:n])
			rest = rest[n:]
		}
		for how, ch := range map[string][][]byte{"random chunks": chunks, "byte by byte": bytewise(in)} {
			got, pending := run(ch)
			if !equalStrings(got, want) || pending != wantPending {
				t.Fatalf("%s:\n got %q pending %v\nwant %q pending %v", how, got, pending, want, wantPending)
			}
		}
		// A nesting error comes at once: fed byte by byte, with the byte
		// that opened one level too many.
		fr := NewFramer(maxSize, maxDepth)
		for i := range in {
			for _, f := range fr.Feed(in[i : i+1]) {
				if errors.Is(f.Err, ErrNestingTooDeep) && in[i] != '[' && in[i] != '{' {
					t.Fatalf("nesting error reported at byte %d (%q), not at an opening bracket", i, in[i])
				}
			}
		}

		cursor := 0
		for _, s := range want {
			kind, text, _ := strings.Cut(s, ":")
			switch kind {
			case "E":
				if text != ErrMessageTooLarge.Error() && text != ErrNestingTooDeep.Error() &&
					!strings.HasPrefix(text, "JSON parse error, stray '") {
					t.Fatalf("unexpected error %q", text)
				}
				continue
			case "D":
			default:
				t.Fatalf("bad frame %q", s)
			}
			data := []byte(text)
			if len(data) == 0 || len(data) > maxSize {
				t.Fatalf("frame of %d bytes, maxSize %d", len(data), maxSize)
			}
			at := bytes.Index(in[cursor:], data)
			if at < 0 {
				t.Fatalf("frame %q is not in the input after offset %d", data, cursor)
			}
			cursor += at + len(data)
			switch data[0] {
			case '{', '[':
				if err := checkBalanced(data, maxDepth); err != nil {
					t.Fatalf("frame %q: %v", data, err)
				}
			case '"', '\'':
				if len(data) < 2 || data[len(data)-1] != data[0] {
					t.Fatalf("string frame %q unterminated", data)
				}
			case ' ', '\t', '\r', '\n':
				t.Fatalf("frame %q starts with whitespace", data)
			}
		}
	})
}
