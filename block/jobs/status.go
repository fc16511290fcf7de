package jobs

// Status is QEMU's JobStatus.
type Status string

const (
	Undefined Status = "undefined"
	Created   Status = "created"
	Running   Status = "running"
	Paused    Status = "paused"
	Ready     Status = "ready"
	Standby   Status = "standby"
	Waiting   Status = "waiting"
	Pending   Status = "pending"
	Aborting  Status = "aborting"
	Concluded Status = "concluded"
	Null      Status = "null"
)

// statusIndex orders the statuses as QEMU's tables do.
var statusIndex = map[Status]int{
	Undefined: 0, Created: 1, Running: 2, Paused: 3, Ready: 4, Standby: 5,
	Waiting: 6, Pending: 7, Aborting: 8, Concluded: 9, Null: 10,
}

// transitions is QEMU's JobSTT: which status may follow which.
//
//	U, C, R, P, Y, S, W, D, X, E, N
var transitions = [11][11]bool{
	0: {1: true},                            // undefined -> created
	1: {2: true, 8: true, 10: true},         // created -> running, aborting, null
	2: {3: true, 4: true, 6: true, 8: true}, // running -> paused, ready, waiting, aborting
	3: {2: true},                            // paused -> running
	4: {5: true, 6: true, 8: true},          // ready -> standby, waiting, aborting
	5: {4: true},                            // standby -> ready
	6: {7: true, 8: true},                   // waiting -> pending, aborting
	7: {8: true, 9: true},                   // pending -> aborting, concluded
	8: {8: true, 9: true},                   // aborting -> aborting, concluded
	9: {10: true},                           // concluded -> null
}

// CanTransition tells whether QEMU's state machine lets a job go from s0 to s1.
func CanTransition(s0, s1 Status) bool {
	i, ok0 := statusIndex[s0]
	j, ok1 := statusIndex[s1]
	return ok0 && ok1 && transitions[i][j]
}

// Verb is QEMU's JobVerb: what a user may ask of a job.
type Verb string

const (
	VerbCancel   Verb = "cancel"
	VerbPause    Verb = "pause"
	VerbResume   Verb = "resume"
	VerbSetSpeed Verb = "set-speed"
	VerbComplete Verb = "complete"
	VerbFinalize Verb = "finalize"
	VerbDismiss  Verb = "dismiss"
)

// verbs is QEMU 7.2's JobVerbTable: in which statuses each verb is accepted.
var verbs = map[Verb][]Status{
	VerbCancel:   {Created, Running, Paused, Ready, Standby, Waiting, Pending},
	VerbPause:    {Created, Running, Paused, Ready, Standby},
	VerbResume:   {Created, Running, Paused, Ready, Standby},
	VerbSetSpeed: {Created, Running, Paused, Ready, Standby},
	VerbComplete: {Ready},
	VerbFinalize: {Pending},
	VerbDismiss:  {Concluded},
}

// Accepts tells whether a job in status s accepts verb v.
func Accepts(v Verb, s Status) bool {
	for _, ok := range verbs[v] {
		if ok == s {
			return true
		}
	}
	return false
}
