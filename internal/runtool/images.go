package runtool

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"minivmm/internal/qmpclient"
)

// image is one file the VMM gets: its format, and a backing image wired
// explicitly (so the VMM opens nothing by path).
type image struct {
	path    string
	format  string
	backing *image
	set     int // fdset of its O_RDONLY/O_RDWR pair
	node    string
	info    os.FileInfo // to find its fds in /proc
	// What the VMM should hold on it now: open at all, and read-write.
	open, rw bool
}

func (i *image) name() string { return filepath.Base(i.path) }

// chain is one device's chain and the live operations run does on it:
// a snapshot onto snap, the commit of the old top into its backing image
// (if it has one), and the active commit of snap into the bottom image.
type chain struct {
	device string
	top    *image // the device's active image
	snap   *image // nil: no live operations
}

// bottom is the image the commits end in.
func (c *chain) bottom() *image {
	b := c.top
	for b.backing != nil {
		b = b.backing
	}
	return b
}

// makeImages makes a raw base and a qcow2 overlay over it, and the
// overlay for the live snapshot, with minivmm img as a user would.
func (r *runner) makeImages(dir string) error {
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(base, 64<<20); err != nil {
		return err
	}
	b := &image{path: base, format: "raw"}
	o, err := r.makeOverlay(filepath.Join(dir, "overlay.qcow2"), b)
	if err != nil {
		return err
	}
	o.backing = b
	s, err := r.makeOverlay(filepath.Join(dir, "snapshot.qcow2"), o)
	if err != nil {
		return err
	}
	r.printf("made %s over %s in %s, and %s for the live snapshot\n", o.name(), b.name(), dir, s.name())
	r.chains = []*chain{{top: o, snap: s}}
	return nil
}

// makeOverlay makes a qcow2 image at path whose header names over as
// its backing file.
func (r *runner) makeOverlay(path string, over *image) (*image, error) {
	backing, err := filepath.Abs(over.path)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(r.cfg.Self, "img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", over.format, path).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("img create %s: %v: %s", path, err, out)
	}
	return &image{path: path, format: "qcow2"}, nil
}

// probeImages names each user image's format, as a management layer
// does, with img info (reading only); with commit, each gets a
// temporary overlay in dir for the live snapshot, committed back into
// it.
func (r *runner) probeImages(paths []string, dir string, commit bool) error {
	for i, p := range paths {
		out, err := exec.Command(r.cfg.Self, "img", "info", "--output=json", p).Output()
		if err != nil {
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				return errors.New(strings.TrimPrefix(strings.TrimSpace(string(exit.Stderr)), "minivmm img: "))
			}
			return err
		}
		var info struct{ Format string }
		if err := json.Unmarshal(out, &info); err != nil || info.Format == "" {
			return fmt.Errorf("img info %s: no format in %q", p, out)
		}
		ch := &chain{top: &image{path: p, format: info.Format}}
		if commit {
			if ch.snap, err = r.makeOverlay(filepath.Join(dir, fmt.Sprintf("snapshot%d.qcow2", i)), ch.top); err != nil {
				return err
			}
		}
		r.chains = append(r.chains, ch)
	}
	return nil
}

// allImages lists every image, each after its backing image.
func (r *runner) allImages() []*image {
	var out []*image
	var add func(*image)
	add = func(i *image) {
		if i.backing != nil {
			add(i.backing)
		}
		out = append(out, i)
	}
	for _, ch := range r.chains {
		add(ch.top)
		if ch.snap != nil {
			out = append(out, ch.snap)
		}
	}
	return out
}

// openPair opens img read-only and read-write, for an fdset of its own.
func (r *runner) openPair(img *image) error {
	r.sets++
	img.set = r.sets
	img.node = fmt.Sprintf("disk%d", img.set)
	for _, mode := range []int{os.O_RDONLY, os.O_RDWR} {
		f, err := os.OpenFile(img.path, mode, 0)
		if err != nil {
			return err
		}
		r.files = append(r.files, f)
	}
	info, err := os.Stat(img.path)
	if err != nil {
		return err
	}
	img.info = info
	return nil
}

// blockdevAdd adds img's nodes (its backing image's first) over its
// fdset, as libvirt does: backing images read-only, the top read-write
// if write; readOnly: nothing may make them writable.
func (r *runner) blockdevAdd(c *qmpclient.Client, img *image, write, readOnly bool) error {
	if img.backing != nil {
		if err := r.blockdevAdd(c, img.backing, false, readOnly); err != nil {
			return err
		}
	}
	// The file node is auto-read-only (its O_RDONLY fd until a writer
	// comes, the O_RDWR one while there is one), so that a commit can
	// make a read-only image's format node read-write; with readOnly the
	// user's image is read-only at every level.
	file := map[string]any{"driver": "file", "node-name": img.node + "-file",
		"filename": fmt.Sprintf("/dev/fdset/%d", img.set), "auto-read-only": true, "discard": "unmap"}
	format := map[string]any{"driver": img.format, "node-name": img.node, "file": img.node + "-file"}
	if !write {
		format["read-only"] = true
	}
	if readOnly {
		file["read-only"] = true
	}
	if img.backing != nil {
		format["backing"] = img.backing.node
	}
	if _, err := c.Execute("blockdev-add", file); err != nil {
		return fmt.Errorf("blockdev-add %s: %w", img.path, err)
	}
	if _, err := c.Execute("blockdev-add", format); err != nil {
		c.Execute("blockdev-del", map[string]any{"node-name": img.node + "-file"})
		return fmt.Errorf("blockdev-add %s: %w", img.path, err)
	}
	img.open, img.rw = true, write
	return nil
}

// blockdevDel deletes img's nodes (not its backing image's).
func blockdevDel(c *qmpclient.Client, img *image) error {
	for _, n := range []string{img.node, img.node + "-file"} {
		if _, err := c.Execute("blockdev-del", map[string]any{"node-name": n}); err != nil {
			return fmt.Errorf("blockdev-del %s: %w", n, err)
		}
	}
	img.open, img.rw = false, false
	return nil
}

// virtualSize asks the VMM for the size of node.
func virtualSize(c *qmpclient.Client, node string) (int64, error) {
	res, err := c.Execute("query-named-block-nodes", map[string]any{"flat": true})
	if err != nil {
		return 0, err
	}
	nodes, _ := res.([]any)
	for _, n := range nodes {
		m, _ := n.(map[string]any)
		if m["node-name"] != node {
			continue
		}
		im, _ := m["image"].(map[string]any)
		v, _ := im["virtual-size"].(json.Number)
		return v.Int64()
	}
	return 0, fmt.Errorf("no node %s", node)
}

// checkImage checks img with qemu-img (minivmm img where qemu-img is not
// installed); a raw image has nothing to check.
func (r *runner) checkImage(img *image) bool {
	if img.format == "raw" {
		return true
	}
	label, cmd := "qemu-img check", exec.Command("qemu-img", "check", img.path)
	if _, err := exec.LookPath("qemu-img"); err != nil {
		label, cmd = "minivmm img check", exec.Command(r.cfg.Self, "img", "check", img.path)
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		r.printf("%s: %v\n", label, err)
		return false
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	r.printf("%s %s: %s\n", label, img.name(), first)
	return err == nil
}
