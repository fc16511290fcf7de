// Package qmpclient is a small QMP client for minivmm's own tools (the
// run command drives a second minivmm as a management layer would).
package qmpclient

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"time"
)

// Client is one QMP connection, past capabilities negotiation. It is not
// safe for concurrent use.
type Client struct {
	conn net.Conn
	dec  *json.Decoder
	// OnEvent, if set, gets every event as it arrives (while a command
	// waits for its reply, or while Event waits).
	OnEvent func(Event)
	pending []Event // events read and not yet asked for
}

// Event is a QMP event: its name, data, and the VMM's timestamp.
type Event struct {
	Name string
	Data map[string]any
	Time time.Time
}

// Str is the string member key of the event's data ("" if absent).
func (e Event) Str(key string) string {
	s, _ := e.Data[key].(string)
	return s
}

// Error is a QMP error reply.
type Error struct{ Class, Desc string }

func (e *Error) Error() string { return e.Desc }

// Dial connects to the socket at path, retrying until timeout while it
// does not exist yet, and negotiates capabilities.
func Dial(path string, timeout time.Duration) (*Client, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	var err error
	for {
		if conn, err = net.Dial("unix", path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := &Client{conn: conn, dec: json.NewDecoder(bufio.NewReader(conn))}
	c.dec.UseNumber()
	var greeting map[string]any
	if err := c.dec.Decode(&greeting); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if _, err := c.Execute("qmp_capabilities", nil); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Execute runs a command and returns its "return" value; an error reply
// is an *Error.
func (c *Client) Execute(cmd string, args map[string]any) (any, error) {
	msg := map[string]any{"execute": cmd}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return nil, err
	}
	for {
		m, err := c.read()
		if err != nil {
			return nil, err
		}
		if _, ev := m["event"]; ev {
			c.pending = append(c.pending, c.event(m))
			if len(c.pending) > 256 {
				c.pending = c.pending[1:]
			}
			continue
		}
		if e, ok := m["error"].(map[string]any); ok {
			class, _ := e["class"].(string)
			desc, _ := e["desc"].(string)
			return nil, &Error{Class: class, Desc: desc}
		}
		return m["return"], nil
	}
}

// Event waits up to timeout for the event name and returns it.
func (c *Client) Event(name string, timeout time.Duration) (Event, error) {
	return c.EventFunc(timeout, func(e Event) bool { return e.Name == name })
}

// EventFunc waits up to timeout for the first event match accepts, among
// those that arrived while commands ran and then those that arrive;
// the events it passes over are dropped.
func (c *Client) EventFunc(timeout time.Duration, match func(Event) bool) (Event, error) {
	for len(c.pending) > 0 {
		e := c.pending[0]
		c.pending = c.pending[1:]
		if match(e) {
			return e, nil
		}
	}
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		m, err := c.read()
		if err != nil {
			return Event{}, fmt.Errorf("waiting for an event: %w", err)
		}
		if _, ev := m["event"]; !ev {
			continue
		}
		if e := c.event(m); match(e) {
			return e, nil
		}
	}
}

func (c *Client) event(m map[string]any) Event {
	e := Event{}
	e.Name, _ = m["event"].(string)
	e.Data, _ = m["data"].(map[string]any)
	if ts, ok := m["timestamp"].(map[string]any); ok {
		sec, _ := ts["seconds"].(json.Number)
		usec, _ := ts["microseconds"].(json.Number)
		s, _ := sec.Int64()
		us, _ := usec.Int64()
		e.Time = time.Unix(s, us*1000)
	}
	if c.OnEvent != nil {
		c.OnEvent(e)
	}
	return e
}

func (c *Client) read() (map[string]any, error) {
	var m map[string]any
	if err := c.dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}
