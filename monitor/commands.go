package monitor

import (
	"maps"
	"slices"

	"golang.org/x/sys/unix"

	"minivmm/qemuopen"
)

// command is one QMP command: the one table the dispatcher checks
// arguments against, query-commands lists and query-qmp-schema renders.
type command struct {
	params []param // the arguments (the members of its arg-type)
	run    func(c *call, args Args) (any, error)
	// raw: the arguments are BlockdevOptions, checked by the block layer
	// rather than against params.
	raw bool
	// union: the arguments are this union (QAPI's boxed arguments,
	// block-export-add's BlockExportOptions), checked and described as
	// one type instead of params.
	union *qtype
	ret   *qtype // the reply's type; nil for an empty object
	// allowOOB: the command may run out of band (exec-oob). QEMU 7.2
	// allows it for migrate-recover, migrate-pause and x-oob-test only,
	// none of which minivmm has.
	allowOOB bool
}

// allowOOB tells whether a command may run out of band (exec-oob); the
// schema's allow-oob says the same, from the same table.
func allowOOB(name string) bool { return commands[name].allowOOB }

// commands is every QMP command minivmm has.
var commands map[string]command

func init() {
	commands = map[string]command{
		"qmp_capabilities": {params: []param{opt("enable", arrayOf(tQMPCapability))}, run: qmpCapabilities},
		"query-version":    {run: func(*call, Args) (any, error) { return Version, nil }, ret: tVersionInfo},
		"query-commands":   {run: queryCommands, ret: arrayOf(tCommandInfo)},
		"query-status":     {run: queryStatus, ret: tStatusInfo},
		"stop":             {run: func(c *call, _ Args) (any, error) { c.mon.srv.vm.Stop(); return nil, nil }},
		"cont":             {run: func(c *call, _ Args) (any, error) { c.afterReply = c.mon.srv.vm.Cont(); return nil, nil }},
		"quit":             {run: quit},
		"system_powerdown": {run: func(c *call, _ Args) (any, error) { c.afterReply = c.mon.srv.vm.Powerdown(); return nil, nil }},
		"system_reset":     {run: func(c *call, _ Args) (any, error) { c.mon.srv.vm.Reset(); return nil, nil }},
		"add-fd":           {params: []param{opt("fdset-id", tInt), opt("opaque", tStr)}, run: addFd, ret: tAddfdInfo},
		"remove-fd":        {params: []param{req("fdset-id", tInt), opt("fd", tInt)}, run: removeFd},
		"query-fdsets":     {run: queryFdsets, ret: arrayOf(tFdsetInfo)},
		"getfd":            {params: []param{req("fdname", tStr)}, run: getfd},
		"closefd":          {params: []param{req("fdname", tStr)}, run: closefd},

		"blockdev-add":            {run: blockdevAdd, raw: true},
		"blockdev-del":            {params: []param{req("node-name", tStr)}, run: blockdevDel},
		"blockdev-reopen":         {params: []param{req("options", arrayOf(tBlockdevOptions))}, run: blockdevReopen},
		"x-blockdev-change":       {params: []param{req("parent", tStr), opt("child", tStr), opt("node", tStr)}, run: xBlockdevChange},
		"query-named-block-nodes": {params: []param{opt("flat", tBool)}, run: queryNamedBlockNodes, ret: arrayOf(tBlockDeviceInfo)},
		"query-block":             {run: queryBlock, ret: arrayOf(tBlockInfo)},
		"blockdev-snapshot":       {params: tBlockdevSnapshot.members, run: blockdevSnapshot},
		"blockdev-snapshot-sync":  {params: tBlockdevSnapshotSync.members, run: blockdevSnapshotSync},
		"transaction": {params: []param{req("actions", arrayOf(tTransactionAction)), opt("properties", tTransactionProperties)},
			run: transaction},
		"block-export-add":    {union: tBlockExportOptions, run: blockExportAdd},
		"block-export-del":    {params: []param{req("id", tStr), opt("mode", tBlockExportRemoveMode)}, run: blockExportDel},
		"query-block-exports": {run: queryBlockExports, ret: arrayOf(tBlockExportInfo)},
		"nbd-server-start":    {params: tNbdServerStart.members, run: nbdServerStart},
		"nbd-server-stop":     {run: nbdServerStop},
		"nbd-server-add":      {params: tNbdServerAddOptions.members, run: nbdServerAdd},
		"nbd-server-remove":   {params: []param{req("name", tStr), opt("mode", tBlockExportRemoveMode)}, run: nbdServerRemove},

		"query-qmp-schema":           {run: queryQMPSchema, ret: arrayOf(tSchemaInfo)},
		"query-name":                 {run: queryName, ret: tNameInfo},
		"query-kvm":                  {run: queryKVM, ret: tKvmInfo},
		"query-machines":             {run: queryMachines, ret: arrayOf(tMachineInfo)},
		"query-command-line-options": {params: []param{opt("option", tStr)}, run: queryCommandLineOptions, ret: arrayOf(tCommandLineOptionInfo)},
		"human-monitor-command":      {params: []param{req("command-line", tStr), opt("cpu-index", tInt)}, run: humanMonitorCommand, ret: tStr},
	}
	maps.Copy(commands, jobCommands())
	maps.Copy(commands, bitmapCommands())
	commands["blockdev-mirror"] = command{params: tBlockdevMirror.members, run: blockdevMirror}
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
