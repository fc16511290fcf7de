package monitor

import (
	"minivmm/block/filter"
	"minivmm/block/jobs"
)

// Job control, with QEMU 7.2's names, arguments and errors: the
// block-job-* commands find a job by its id ("device", for history) and
// answer DeviceNotActive when there is none; the job-* ones by "id",
// with a GenericError.

var (
	tBlockdevOnError = enum("BlockdevOnError", "report", "ignore", "enospc", "stop", "auto")
	tJobType         = enum("JobType", "commit", "stream", "mirror", "backup", "create", "amend", "snapshot-load", "snapshot-save", "snapshot-delete")
	tJobStatus       = enum("JobStatus", "undefined", "created", "running", "paused", "ready", "standby", "waiting", "pending", "aborting", "concluded", "null")
	tIoStatus        = enum("BlockDeviceIoStatus", "ok", "failed", "nospace")

	tBlockJobInfo = object("BlockJobInfo",
		req("type", tStr), req("device", tStr), req("len", tInt), req("offset", tInt),
		req("busy", tBool), req("paused", tBool), req("speed", tInt), req("io-status", tIoStatus),
		req("ready", tBool), req("status", tJobStatus), req("auto-finalize", tBool), req("auto-dismiss", tBool),
		opt("error", tStr))
	tJobInfo = object("JobInfo",
		req("id", tStr), req("type", tJobType), req("status", tJobStatus),
		req("current-progress", tInt), req("total-progress", tInt), opt("error", tStr))
)

// jobCommands are the job commands, merged into the command table.
func jobCommands() map[string]command {
	device := []param{req("device", tStr)}
	id := []param{req("id", tStr)}
	return map[string]command{
		"query-block-jobs":    {run: queryBlockJobs, ret: arrayOf(tBlockJobInfo)},
		"query-jobs":          {run: queryJobs, ret: arrayOf(tJobInfo)},
		"block-job-cancel":    {params: []param{req("device", tStr), opt("force", tBool)}, run: blockJobVerb("device", func(j *jobs.Job, a Args) error { f, _ := a["force"].(bool); return j.Cancel(f) })},
		"block-job-pause":     {params: device, run: blockJobVerb("device", func(j *jobs.Job, _ Args) error { return j.Pause() })},
		"block-job-resume":    {params: device, run: blockJobVerb("device", func(j *jobs.Job, _ Args) error { return j.Resume() })},
		"block-job-complete":  {params: device, run: blockJobVerb("device", func(j *jobs.Job, _ Args) error { return j.Complete() })},
		"block-job-set-speed": {params: []param{req("device", tStr), req("speed", tInt)}, run: blockJobVerb("device", func(j *jobs.Job, a Args) error { s, _ := a.Int("speed"); return j.SetSpeed(s) })},
		"block-job-dismiss":   {params: id, run: blockJobVerb("id", func(j *jobs.Job, _ Args) error { return j.Dismiss() })},
		"block-job-finalize":  {params: id, run: blockJobVerb("id", func(j *jobs.Job, _ Args) error { return j.Finalize() })},
		"job-cancel":          {params: id, run: jobVerb(func(j *jobs.Job) error { return j.Cancel(true) })},
		"job-pause":           {params: id, run: jobVerb((*jobs.Job).Pause)},
		"job-resume":          {params: id, run: jobVerb((*jobs.Job).Resume)},
		"job-complete":        {params: id, run: jobVerb((*jobs.Job).Complete)},
		"job-dismiss":         {params: id, run: jobVerb((*jobs.Job).Dismiss)},
		"job-finalize":        {params: id, run: jobVerb((*jobs.Job).Finalize)},
		"block-commit":        {params: tBlockCommit.members, run: blockCommit},
		"block-stream":        {params: tBlockStream.members, run: blockStream},
	}
}

func blockJobVerb(key string, f func(*jobs.Job, Args) error) func(*call, Args) (any, error) {
	return func(c *call, a Args) (any, error) {
		id, _ := a.Str(key)
		j, ok := c.mon.srv.jobs.Job(id)
		if !ok {
			return nil, &Error{Class: DeviceNotActive, Desc: "Block job '" + id + "' not found"}
		}
		return nil, f(j, a)
	}
}

func jobVerb(f func(*jobs.Job) error) func(*call, Args) (any, error) {
	return func(c *call, a Args) (any, error) {
		id, _ := a.Str("id")
		j, ok := c.mon.srv.jobs.Job(id)
		if !ok {
			return nil, genericError("Job not found")
		}
		return nil, f(j)
	}
}

func queryBlockJobs(c *call, _ Args) (any, error) {
	out := []any{}
	for _, j := range c.mon.srv.jobs.Jobs() {
		in := j.Info()
		o := Obj{{"type", in.Type}, {"device", in.ID}, {"len", in.Total}, {"offset", in.Done},
			{"busy", in.Busy}, {"paused", in.Paused}, {"speed", in.Speed}, {"io-status", in.IOStatus},
			{"ready", in.Ready}, {"status", string(in.Status)}, {"auto-finalize", in.AutoFinalize}, {"auto-dismiss", in.AutoDismiss}}
		if in.Error != "" {
			o = append(o, Member{"error", in.Error})
		}
		out = append(out, o)
	}
	return out, nil
}

func queryJobs(c *call, _ Args) (any, error) {
	out := []any{}
	for _, j := range c.mon.srv.jobs.Jobs() {
		in := j.Info()
		o := Obj{{"id", in.ID}, {"type", in.Type}, {"status", string(in.Status)},
			{"current-progress", in.Done}, {"total-progress", in.Total}}
		if in.Error != "" {
			o = append(o, Member{"error", in.Error})
		}
		out = append(out, o)
	}
	return out, nil
}

// emitJobEvent is the jobs.Manager's event sink: the server's Emit.
func (s *Server) emitJobEvent(event string, data []jobs.Field) {
	obj := make(Obj, len(data))
	for i, f := range data {
		obj[i] = Member{f.Key, f.Value}
	}
	s.Emit(event, obj)
}

// jobSpec is the part of a job command's arguments every block job
// takes; id defaults to the device's backend name, as QEMU's
// block_job_create does.
func jobSpec(a Args, typ, deviceName string) jobs.Spec {
	s := jobs.Spec{Type: typ, AutoFinalize: true, AutoDismiss: true, OnError: "report"}
	s.ID = deviceName
	if id, ok := a.Str("job-id"); ok {
		s.ID = id
	}
	s.Speed, _ = a.Int("speed")
	if v, ok := a["auto-finalize"].(bool); ok {
		s.AutoFinalize = v
	}
	if v, ok := a["auto-dismiss"].(bool); ok {
		s.AutoDismiss = v
	}
	if v, ok := a.Str("on-error"); ok {
		s.OnError = v
	}
	return s
}

// jobBusy is blockdev-del's refusal of a node a job holds, in QEMU's
// words: the job's device node is busy, the others in use.
func (s *Server) jobBusy(name string) error {
	j, ok := s.jobs.Busy(name)
	if !ok {
		return nil
	}
	if n, ok := s.graph.Node(name); ok && n.InUse() {
		return nil // the graph's own "in use" comes first
	}
	// The job's device, and a mirror's filter (QEMU's op blockers on
	// them), are busy; its other nodes are in use by the job's backends.
	n, _ := s.graph.Node(name)
	if nodes := j.Spec().Nodes; len(nodes) > 0 && nodes[0] == name || n != nil && n.IsFilter() && n.Driver() == filter.MirrorTop {
		return genericError("Node '%s' is busy: block device is in use by block job: %s", name, j.Type())
	}
	return genericError("Node %s is in use", name)
}

// The job events, declared for query-qmp-schema.
func init() {
	progress := func(name string, more ...param) *qtype {
		return object(name, append([]param{req("type", tJobType), req("device", tStr), req("len", tInt),
			req("offset", tInt), req("speed", tInt)}, more...)...)
	}
	events["JOB_STATUS_CHANGE"] = object("q_obj_JOB_STATUS_CHANGE-arg", req("id", tStr), req("status", tJobStatus))
	events["BLOCK_JOB_COMPLETED"] = progress("q_obj_BLOCK_JOB_COMPLETED-arg", opt("error", tStr))
	events["BLOCK_JOB_CANCELLED"] = progress("q_obj_BLOCK_JOB_CANCELLED-arg")
	events["BLOCK_JOB_READY"] = progress("q_obj_BLOCK_JOB_READY-arg")
	events["BLOCK_JOB_PENDING"] = object("q_obj_BLOCK_JOB_PENDING-arg", req("type", tJobType), req("id", tStr))
	events["BLOCK_JOB_ERROR"] = object("q_obj_BLOCK_JOB_ERROR-arg", req("device", tStr),
		req("operation", enum("IoOperationType", "read", "write")),
		req("action", enum("BlockErrorAction", "ignore", "report", "stop")))
}
