package runtool

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"minivmm/internal/qmpclient"
)

// fdTable is what the VMM holds on each image, read from /proc: the fds
// it opened (dups of fdset members, made by its qemu_open) by their mode,
// apart from the fdset members themselves, which stay for as long as the
// set does.
type fdTable struct {
	opened  map[*image][]string // "RO" or "RW" per fd, sorted
	members int                 // fdset members held on the images
}

// readFds reads the fd table of process pid on imgs; members are the fd
// numbers query-fdsets names.
func readFds(pid int, imgs []*image, members map[int]bool) (fdTable, error) {
	t := fdTable{opened: map[*image][]string{}}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return t, err
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile, or not a file
		}
		var img *image
		for _, i := range imgs {
			if i.info != nil && os.SameFile(st, i.info) {
				img = i
			}
		}
		if img == nil {
			continue
		}
		if members[fd] {
			t.members++
			continue
		}
		mode, err := fdMode(pid, fd)
		if err != nil {
			return t, err
		}
		t.opened[img] = append(t.opened[img], mode)
	}
	for _, m := range t.opened {
		sort.Strings(m)
	}
	return t, nil
}

// fdMode is RO or RW from the fd's flags in /proc/PID/fdinfo.
func fdMode(pid, fd int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return "", err
	}
	return parseFdinfoMode(string(b))
}

// parseFdinfoMode reads the access mode from the "flags:" line (octal)
// of an fdinfo file: RO, RW or WO.
func parseFdinfoMode(fdinfo string) (string, error) {
	sc := bufio.NewScanner(strings.NewReader(fdinfo))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "flags:")
		if !ok {
			continue
		}
		flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
		if err != nil {
			return "", fmt.Errorf("fdinfo flags %q: %w", strings.TrimSpace(v), err)
		}
		switch flags & uint64(os.O_RDONLY|os.O_WRONLY|os.O_RDWR) {
		case uint64(os.O_RDONLY):
			return "RO", nil
		case uint64(os.O_RDWR):
			return "RW", nil
		default:
			return "WO", nil
		}
	}
	return "", fmt.Errorf("fdinfo without flags")
}

// modes renders what the table holds on img: "-" for nothing, else the
// modes joined with "+".
func (t fdTable) modes(img *image) string {
	if m := t.opened[img]; len(m) > 0 {
		return strings.Join(m, "+")
	}
	return "-"
}

// fdsetMembers asks the VMM which fds its fdsets hold.
func fdsetMembers(c *qmpclient.Client) (map[int]bool, error) {
	res, err := c.Execute("query-fdsets", nil)
	if err != nil {
		return nil, fmt.Errorf("query-fdsets: %w", err)
	}
	out := map[int]bool{}
	sets, _ := res.([]any)
	for _, s := range sets {
		set, _ := s.(map[string]any)
		fds, _ := set["fds"].([]any)
		for _, f := range fds {
			m, _ := f.(map[string]any)
			n, _ := m["fd"].(json.Number)
			fd, err := n.Int64()
			if err != nil {
				return nil, fmt.Errorf("query-fdsets: fd %v", m["fd"])
			}
			out[int(fd)] = true
		}
	}
	return out, nil
}
