package monitor

import (
	"slices"

	"golang.org/x/sys/unix"

	"minivmm/qemuopen"
)

type command struct {
	params []param
	run    func(c *call, args Args) (any, error)
	// raw: the arguments are a schema of their own (BlockdevOptions),
	// checked by the block layer rather than against params.
	raw bool
}

// commands is every QMP command minivmm has; query-commands lists them.
var commands map[string]command

func init() {
	commands = map[string]command{
		"qmp_capabilities": {[]param{{"enable", argStrList, true}}, qmpCapabilities, false},
		"query-version":    {nil, func(*call, Args) (any, error) { return Version, nil }, false},
		"query-commands":   {nil, queryCommands, false},
		"query-status":     {nil, queryStatus, false},
		"stop":             {nil, func(c *call, _ Args) (any, error) { c.mon.srv.vm.Stop(); return nil, nil }, false},
		"cont":             {nil, func(c *call, _ Args) (any, error) { c.mon.srv.vm.Cont(); return nil, nil }, false},
		"quit":             {nil, quit, false},
		"add-fd":           {[]param{{"fdset-id", argInt, true}, {"opaque", argStr, true}}, addFd, false},
		"remove-fd":        {[]param{{"fdset-id", argInt, false}, {"fd", argInt, true}}, removeFd, false},
		"query-fdsets":     {nil, queryFdsets, false},
		"getfd":            {[]param{{"fdname", argStr, false}}, getfd, false},
		"closefd":          {[]param{{"fdname", argStr, false}}, closefd, false},

		"blockdev-add":            {nil, blockdevAdd, true},
		"blockdev-del":            {[]param{{"node-name", argStr, false}}, blockdevDel, false},
		"blockdev-reopen":         {[]param{{"options", argObjList, false}}, blockdevReopen, false},
		"query-named-block-nodes": {[]param{{"flat", argBool, true}}, queryNamedBlockNodes, false},
		"query-block":             {nil, queryBlock, false},
	}
}

func queryCommands(*call, Args) (any, error) {
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	slices.Sort(names)
	list := make([]any, len(names))
	for i, name := range names {
		list[i] = Obj{{"name", name}}
	}
	return list, nil
}

func queryStatus(c *call, _ Args) (any, error) {
	state := c.mon.srv.vm.State()
	// QEMU 9.1, the version minivmm claims, has no "singlestep" (removed in 9.0).
	return Obj{{"status", state}, {"running", state == StateRunning}}, nil
}

func quit(c *call, _ Args) (any, error) {
	// As in QEMU: SHUTDOWN first, then the reply, then the VMM exits.
	vm := c.mon.srv.vm
	vm.Shutdown("host-qmp-quit")
	c.afterReply = vm.RequestExit
	return nil, nil
}

func addFd(c *call, args Args) (any, error) {
	fd, err := c.takeFd()
	if err != nil {
		return nil, err
	}
	req := qemuopen.AddRequest{Owner: c.owner}
	if id, ok := args.Int("fdset-id"); ok {
		req.SetID = &id
	}
	if opaque, ok := args.Str("opaque"); ok {
		req.Opaque = &opaque
	}
	info, id, err := c.mon.srv.fds.AddFd(fd, req)
	if err != nil {
		return nil, genericError("%s", err.Error())
	}
	return Obj{{"fd", info.Fd}, {"fdset-id", id}}, nil
}

func removeFd(c *call, args Args) (any, error) {
	id, _ := args.Int("fdset-id")
	var fdp *int
	if fd, ok := args.Int("fd"); ok {
		n := int(fd) // int is 64 bits on every platform minivmm builds for
		fdp = &n
	}
	if err := c.mon.srv.fds.RemoveFd(id, fdp); err != nil {
		return nil, genericError("%s", err.Error())
	}
	return nil, nil
}

func queryFdsets(c *call, _ Args) (any, error) {
	sets := c.mon.srv.fds.Query()
	out := make([]any, len(sets))
	for i, s := range sets {
		fds := make([]any, len(s.Fds))
		for j, f := range s.Fds {
			o := Obj{{"fd", f.Fd}}
			if f.Opaque != nil {
				o = append(o, Member{"opaque", *f.Opaque})
			}
			fds[j] = o
		}
		out[i] = Obj{{"fds", fds}, {"fdset-id", s.ID}}
	}
	return out, nil
}

func getfd(c *call, args Args) (any, error) {
	fd, err := c.takeFd()
	if err != nil {
		return nil, err
	}
	name, _ := args.Str("fdname")
	if name != "" && name[0] >= '0' && name[0] <= '9' {
		unix.Close(fd)
		return nil, genericError("Parameter 'fdname' expects a name not starting with a digit")
	}
	m := c.mon
	m.namedMu.Lock()
	old, had := m.named[name]
	m.named[name] = fd
	m.namedMu.Unlock()
	if had {
		unix.Close(old)
	}
	return nil, nil
}

func closefd(c *call, args Args) (any, error) {
	name, _ := args.Str("fdname")
	m := c.mon
	m.namedMu.Lock()
	fd, ok := m.named[name]
	delete(m.named, name)
	m.namedMu.Unlock()
	if !ok {
		return nil, genericError("File descriptor named '%s' not found", name)
	}
	unix.Close(fd)
	return nil, nil
}
