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
	// OnEvent, if set, gets every event that arrives while a command
	// waits for its reply, or while Event waits.
	OnEvent func(name string, data map[string]any)
	pending []map[string]any // events read and not yet asked for
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
			c.event(m)
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

// Event waits up to timeout for the event name and returns its data.
func (c *Client) Event(name string, timeout time.Duration) (map[string]any, error) {
	for i, m := range c.pending {
		if m["event"] == name {
			c.pending = append(c.pending[:i:i], c.pending[i+1:]...)
			data, _ := m["data"].(map[string]any)
			return data, nil
		}
	}
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	defer c.conn.SetReadDeadline(time.Time{})
	for {
		m, err := c.read()
		if err != nil {
			return nil, fmt.Errorf("waiting for %s: %w", name, err)
		}
		if m["event"] == name {
			if c.OnEvent != nil {
				data, _ := m["data"].(map[string]any)
				c.OnEvent(name, data)
			}
			data, _ := m["data"].(map[string]any)
			return data, nil
		}
		if _, ev := m["event"]; ev {
			c.event(m)
		}
	}
}

func (c *Client) event(m map[string]any) {
	name, _ := m["event"].(string)
	data, _ := m["data"].(map[string]any)
	if c.OnEvent != nil {
		c.OnEvent(name, data)
	}
	c.pending = append(c.pending, m)
	if len(c.pending) > 64 {
		c.pending = c.pending[1:]
	}
}

func (c *Client) read() (map[string]any, error) {
	var m map[string]any
	if err := c.dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}
