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
// and "#" comments; the errors are QEMU's words.
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
		t := strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			end := strings.IndexByte(line, ']')
			if end < 0 {
				return nil, fmt.Errorf("parse error")
			}
			group := strings.Fields(line[1:end])
			if len(group) == 0 {
				return nil, fmt.Errorf("parse error")
			}
			if _, ok := groupKeys[group[0]]; !ok {
				return nil, fmt.Errorf("There is no option group '%s'", group[0])
			}
			out = append(out, section{group: group[0], opts: map[string]string{}})
			cur = len(out) - 1
			continue
		}
		key, val, ok := parseAssignment(t)
		if !ok {
			if t == "" {
				continue
			}
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

// parseAssignment splits `key = "value"`; the value is quoted and stops
// at the next quote, as QEMU's sscanf pattern has it.
func parseAssignment(t string) (key, val string, ok bool) {
	k, rest, found := strings.Cut(t, "=")
	key = strings.TrimSpace(k)
	if !found || key == "" || strings.ContainsAny(key, " \t") {
		return "", "", false
	}
	rest = strings.TrimSpace(rest)
	if len(rest) < 2 || rest[0] != '"' {
		return "", "", false
	}
	end := strings.IndexByte(rest[1:], '"')
	if end < 0 {
		return "", "", false
	}
	return key, rest[1 : 1+end], true
}

func validKey(group, key string) bool {
	for _, k := range groupKeys[group] {
		if k == key {
			return true
		}
	}
	return false
}
