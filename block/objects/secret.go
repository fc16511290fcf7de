package objects

import (
	"errors"
	"fmt"
	"os"
)

// Secret is a "secret" object: data given inline or read from a file.
// minivmm has no driver that decrypts, so nothing reads it yet; it is
// checked as QEMU checks it and holds its id.
type Secret struct {
	data   []byte
	format string
	keyid  string
}

func (*Secret) Type() string { return "secret" }

type pendingSecret struct {
	data, file, format, keyid string
	hasData, hasFile          bool
}

func parseSecret(p *props_) (pending, error) {
	var s pendingSecret
	var err error
	if s.data, err = p.str("data"); err != nil {
		return nil, err
	}
	if s.file, err = p.str("file"); err != nil {
		return nil, err
	}
	if s.format, err = p.enum("format", "raw", "raw", "base64"); err != nil {
		return nil, err
	}
	if s.keyid, err = p.str("keyid"); err != nil {
		return nil, err
	}
	if _, err := p.str("iv"); err != nil {
		return nil, err
	}
	if _, err := p.boolean("loaded", false); err != nil {
		return nil, err
	}
	_, s.hasData = p.m["data"]
	_, s.hasFile = p.m["file"]
	return &s, nil
}

func (s *pendingSecret) complete(*Registry, string) (Object, error) {
	switch {
	case s.hasData && s.hasFile:
		return nil, errors.New("'data' and 'file' are mutually exclusive")
	case !s.hasData && !s.hasFile:
		return nil, errors.New("Either 'file' or 'data' must be provided")
	}
	data := []byte(s.data)
	if s.hasFile {
		b, err := os.ReadFile(s.file)
		if err != nil {
			return nil, fmt.Errorf("Unable to read %s: %v", s.file, err)
		}
		data = b
	}
	return &Secret{data: data, format: s.format, keyid: s.keyid}, nil
}
