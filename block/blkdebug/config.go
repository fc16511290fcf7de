package blkdebug

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// section is one [inject-error] or [set-state] group of a config file, or
// one element of the inject-error/set-state option lists: key to value,
// as strings (qemu_opts reads the numbers and booleans later).
type section struct {
	group string
	opts  map[string]string
}

// groupKeys are the keys each group takes (QEMU's inject_error_opts and
// set_state_opts).
var groupKeys = map[string][]string{
	"inject-error": {"event", "state", "iotype", "errno", "sector", "once", "immediately"},
	"set-state":    {"event", "state", "new_state"},
}

// parseConfig reads QEMU's blkdebug config file format (qemu_config_parse):
// "[group]" or `[group "id"]` headers, ` key = "value"` lines, blank lines
// and "#" comments; the errors are QEMU's words. A line is read as QEMU's
// sscanf patterns read it: its first word is the key whatever follows
// (`event="x"` is a key of its own), the value is what stands between
// the quotes after " = ", else empty.
func parseConfig(r io.Reader) ([]section, error) {
	var out []section
	cur := -1
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if group, ok := parseHeader(line); ok {
			if _, known := groupKeys[group]; !known {
				return nil, fmt.Errorf("There is no option group '%s'", group)
			}
			out = append(out, section{group: group, opts: map[string]string{}})
			cur = len(out) - 1
			continue
		}
		key, val, ok := parseAssignment(line)
		if !ok {
			return nil, fmt.Errorf("parse error")
		}
		if cur < 0 {
			return nil, fmt.Errorf("no group defined")
		}
		if !validKey(out[cur].group, key) {
			return nil, fmt.Errorf("Invalid parameter '%s'", key)
		}
		out[cur].opts[key] = val
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// parseHeader reads `[group "id"]` (the group is its first word) or
// "[group]" (all up to the bracket, or the end of the line).
func parseHeader(line string) (string, bool) {
	rest, ok := strings.CutPrefix(line, "[")
	if !ok || rest == "" || rest[0] == ']' {
		return "", false
	}
	if f := strings.Fields(rest); len(f) > 1 && strings.HasPrefix(f[1], `"`) && len(f[0]) > 0 {
		if _, id, _ := strings.Cut(rest, `"`); strings.Contains(id, `"`) && id[0] != '"' {
			return f[0], true
		}
	}
	group, _, closed := strings.Cut(rest, "]")
	if !closed {
		group += "\n" // QEMU reads the line with its newline
	}
	return group, true
}

// parseAssignment reads ` key = "value"`: false for a blank line.
func parseAssignment(line string) (key, val string, ok bool) {
	t := strings.TrimLeft(line, " \t\v\f\r")
	if t == "" {
		return "", "", false
	}
	key = t
	if i := strings.IndexAny(t, " \t\v\f\r"); i >= 0 {
		key = t[:i]
	}
	rest := strings.TrimLeft(t[len(key):], " \t\v\f\r")
	rest, eq := strings.CutPrefix(rest, "=")
	rest = strings.TrimLeft(rest, " \t\v\f\r")
	if rest, q := strings.CutPrefix(rest, `"`); eq && q {
		val, _, _ = strings.Cut(rest, `"`)
	}
	return key, val, true
}

func validKey(group, key string) bool {
	for _, k := range groupKeys[group] {
		if k == key {
			return true
		}
	}
	return false
}
