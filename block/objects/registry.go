// Package objects holds a process's user-creatable objects, QEMU's
// -object/object-add: TLS credentials a server or a client of NBD uses,
// and the secrets they name. A [Registry] is owned by the process, like
// the fdset registry; block drivers reach it through their open
// context, exports through the command that starts them.
package objects

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Object is one user-creatable object.
type Object interface {
	// Type is the object's qom-type.
	Type() string
}

// Registry owns the objects of a process, by id. It is safe for
// concurrent use; the zero value is not usable, make one with
// [NewRegistry].
type Registry struct {
	mu   sync.Mutex
	objs map[string]Object
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{objs: map[string]Object{}} }

// Get finds an object by id.
func (r *Registry) Get(id string) (Object, bool) {
	if r == nil {
		return nil, false // a process that made no registry has no objects
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.objs[id]
	return o, ok
}

// ErrDuplicate is the error Add returns for an id already taken; the
// callers word it as their QEMU tool does.
var ErrDuplicate = errors.New("duplicate object id")

// DuplicateError names the id Add found taken.
type DuplicateError struct{ ID string }

func (e *DuplicateError) Error() string {
	// object-add's and qemu-img's words; -object says it its own way.
	return fmt.Sprintf("attempt to add duplicate property '%s' to object (type 'container')", e.ID)
}

func (e *DuplicateError) Unwrap() error { return ErrDuplicate }

// Add creates an object from its properties, qom-type and id among
// them, as user_creatable_add_type does: the properties are checked, the
// id must be free, then the object completes (TLS credentials load their
// files). With keyval, every value is a string, as -object and --object
// give them; otherwise values are JSON's, as object-add gives them. On
// error nothing was added.
func (r *Registry) Add(props map[string]any, keyval bool) error {
	p := &props_{m: props, keyval: keyval}
	typ, ok := props["qom-type"]
	if !ok {
		return errors.New("Parameter 'qom-type' is missing")
	}
	ts, _ := typ.(string)
	t, known := types[ts]
	if !known {
		if _, isStr := typ.(string); !isStr {
			return errors.New("Invalid parameter type for 'qom-type', expected: string")
		}
		return fmt.Errorf("Parameter 'qom-type' does not accept value '%s'", ts)
	}
	p.seen = append(p.seen, "qom-type")
	id, err := p.str("id")
	if err != nil {
		return err
	}
	if _, ok := props["id"]; !ok {
		return errors.New("Parameter 'id' is missing")
	}
	if !wellFormedID(id) {
		return errors.New("Parameter 'id' expects an identifier")
	}
	if t.unsupported != "" {
		return fmt.Errorf("minivmm has no '%s' objects: %s", ts, t.unsupported)
	}
	for _, k := range sortedKeys(props) {
		if !slices.Contains(t.props, k) && k != "qom-type" && k != "id" {
			return &UnexpectedError{Name: k}
		}
	}
	pending, err := t.parse(p)
	if err != nil {
		return err
	}
	r.mu.Lock()
	_, taken := r.objs[id]
	r.mu.Unlock()
	if taken {
		return &DuplicateError{ID: id}
	}
	obj, err := pending.complete(r, id)
	if err != nil {
		return &CompleteError{err}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, taken := r.objs[id]; taken {
		return &DuplicateError{ID: id}
	}
	r.objs[id] = obj
	return nil
}

// Del removes an object (object-del). Whoever uses it keeps it, as QEMU's
// users keep their reference: an NBD server started with TLS credentials
// goes on serving with them.
func (r *Registry) Del(id string) error {
	if r == nil {
		return fmt.Errorf("object '%s' not found", id)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.objs[id]; !ok {
		return fmt.Errorf("object '%s' not found", id)
	}
	delete(r.objs, id)
	return nil
}

// UnexpectedError is a property the object's type does not have.
type UnexpectedError struct{ Name string }

func (e *UnexpectedError) Error() string { return fmt.Sprintf("Parameter '%s' is unexpected", e.Name) }

// CompleteError is an error of an object's completion (files it loads,
// properties set after creation), which QEMU's -object reports without
// naming the option.
type CompleteError struct{ Err error }

func (e *CompleteError) Error() string { return e.Err.Error() }
func (e *CompleteError) Unwrap() error { return e.Err }

// objType is what a qom-type takes and how its object is made.
type objType struct {
	props []string
	parse func(p *props_) (pending, error)
	// unsupported: why minivmm refuses the type (a QEMU type it knows
	// of but cannot build soundly).
	unsupported string
}

// pending is an object whose properties were checked, not yet complete.
type pending interface {
	complete(r *Registry, id string) (Object, error)
}

var types = map[string]objType{
	"secret":         {props: []string{"data", "file", "format", "keyid", "iv", "loaded"}, parse: parseSecret},
	"tls-creds-x509": {props: []string{"dir", "endpoint", "verify-peer", "priority", "loaded", "sanity-check", "passwordid"}, parse: parseX509},
	"tls-creds-psk": {unsupported: "Go's TLS (crypto/tls) has no pre-shared-key cipher suites; " +
		"use tls-creds-x509"},
	"tls-creds-anon": {unsupported: "Go's TLS (crypto/tls) has no anonymous cipher suites; use tls-creds-x509"},
	"authz-simple":   {props: []string{"identity"}, parse: parseAuthzSimple},
	"authz-list":     {unsupported: "of QEMU's authz objects minivmm builds authz-simple only"},
	"authz-listfile": {unsupported: "of QEMU's authz objects minivmm builds authz-simple only"},
	"authz-pam":      {unsupported: "of QEMU's authz objects minivmm builds authz-simple only"},
}

// Types lists the qom-types Add takes (for --object help).
func Types() []string {
	var out []string
	for k, t := range types {
		if t.unsupported == "" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// wellFormedID is QEMU's id_wellformed: a letter, then letters, digits,
// '-', '.', '_'.
func wellFormedID(id string) bool {
	for i, c := range []byte(id) {
		alpha := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !alpha && (i == 0 || !(c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_')) {
			return false
		}
	}
	return id != ""
}
