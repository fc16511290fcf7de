package machine

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// DeviceConfig is a -device or device_add of a virtio-blk device.
type DeviceConfig struct {
	Driver    string // "virtio-blk-pci"
	ID        string // empty: an anonymous device
	Drive     string // a backend (-drive id) or a node name
	NumQueues int
	QueueSize int
	Serial    string
	ShareRW   bool
}

// Defaults of QEMU 7.2's virtio-blk-pci on a one-vCPU machine.
const (
	DefaultQueueSize = 256
	maxQueueSize     = 1024 // QEMU's VIRTQUEUE_MAX_SIZE
	maxQueues        = 1024
)

// Properties a virtio-blk-pci takes that management layers pass and the
// built-in machine has no use for: accepted and ignored, as a machine
// without a PCI topology may.
var ignoredProps = map[string]bool{"bus": true, "addr": true, "bootindex": true, "multifunction": true,
	"rombar": true, "romfile": true, "disable-legacy": true, "disable-modern": true, "vectors": true,
	"ioeventfd": true, "event_idx": true, "indirect_desc": true}

// ParseDeviceConfig reads a device's properties: strings from the command
// line, or JSON values (float64, json.Number, bool, string) from QMP.
// "driver" and "id" are among them. Errors use QEMU's words.
func ParseDeviceConfig(props map[string]any) (DeviceConfig, error) {
	c := DeviceConfig{NumQueues: 1, QueueSize: DefaultQueueSize}
	drv, _ := props["driver"].(string)
	switch drv {
	case "virtio-blk-pci", "virtio-blk":
		c.Driver = "virtio-blk-pci"
	case "":
		return c, fmt.Errorf("Parameter 'driver' is missing")
	default:
		return c, fmt.Errorf("'%s' is not a valid device model name", drv)
	}
	if v, ok := props["id"]; ok {
		id, _ := v.(string)
		if !wellFormedID(id) {
			return c, fmt.Errorf("Parameter 'id' expects an identifier")
		}
		c.ID = id
	}
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	// QEMU sets the properties in the order given; a map has none, so
	// the first error is picked by name.
	slices.Sort(keys)
	for _, k := range keys {
		v := props[k]
		var err error
		switch k {
		case "driver", "id":
		case "drive":
			c.Drive, err = str(k, v)
		case "serial":
			c.Serial, err = str(k, v)
		case "num-queues":
			c.NumQueues, err = integer(k, v)
		case "queue-size":
			c.QueueSize, err = integer(k, v)
		case "share-rw":
			c.ShareRW, err = boolean(k, v)
		default:
			if !ignoredProps[k] {
				return c, fmt.Errorf("Property '%s.%s' not found", c.Driver, k)
			}
		}
		if err != nil {
			return c, err
		}
	}
	// virtio_blk_device_realize's checks, in its order.
	switch {
	case c.Drive == "":
		return c, fmt.Errorf("drive property not set")
	case c.NumQueues <= 0:
		return c, fmt.Errorf("num-queues property must be larger than 0")
	case c.NumQueues > maxQueues:
		return c, fmt.Errorf("num-queues property must be <= %d", maxQueues)
	case c.QueueSize <= 2:
		return c, fmt.Errorf("invalid queue-size property (%d), must be > 2", c.QueueSize)
	case c.QueueSize&(c.QueueSize-1) != 0 || c.QueueSize > maxQueueSize:
		return c, fmt.Errorf("invalid queue-size property (%d), must be a power of 2 (max %d)", c.QueueSize, maxQueueSize)
	}
	return c, nil
}

func str(k string, v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("Parameter '%s' expects string", k)
	}
	return s, nil
}

func integer(k string, v any) (int, error) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case fmt.Stringer: // json.Number
		s = x.String()
	case float64:
		s = strconv.FormatFloat(x, 'f', -1, 64)
	case int64:
		s = strconv.FormatInt(x, 10)
	case int:
		s = strconv.Itoa(x)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 0, 32)
	if err != nil {
		return 0, fmt.Errorf("Parameter '%s' expects integer", k)
	}
	return int(n), nil
}

func boolean(k string, v any) (bool, error) {
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		switch x {
		case "on", "yes", "true", "y":
			return true, nil
		case "off", "no", "false", "n":
			return false, nil
		}
	}
	return false, fmt.Errorf("Parameter '%s' expects 'on' or 'off'", k)
}

// wellFormedID is QEMU's id_wellformed: a letter, then letters, digits,
// '-', '.' and '_'.
func wellFormedID(id string) bool {
	for i, c := range id {
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_')) {
			return false
		}
	}
	return id != ""
}
