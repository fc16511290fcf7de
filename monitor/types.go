package monitor

// The QAPI types of minivmm's commands and events, with QEMU's names and
// members in QEMU's order. Only what minivmm checks or returns is declared:
// the schema describes minivmm, not QEMU.

var (
	tQMPCapability = enum("QMPCapability", "oob")

	tVersionInfo = object("VersionInfo",
		req("qemu", object("VersionTriple", req("major", tInt), req("minor", tInt), req("micro", tInt))),
		req("package", tStr))

	tCommandInfo = object("CommandInfo", req("name", tStr))

	tRunState = enum("RunState", "debug", "inmigrate", "internal-error", "io-error", "paused",
		"postmigrate", "prelaunch", "finish-migrate", "restore-vm", "running", "save-vm",
		"shutdown", "suspended", "watchdog", "guest-panicked", "colo")
	tStatusInfo = object("StatusInfo", req("running", tBool), req("status", tRunState))

	tAddfdInfo   = object("AddfdInfo", req("fdset-id", tInt), req("fd", tInt))
	tFdsetFdInfo = object("FdsetFdInfo", req("fd", tInt), opt("opaque", tStr))
	tFdsetInfo   = object("FdsetInfo", req("fdset-id", tInt), req("fds", arrayOf(tFdsetFdInfo)))

	tBlockdevDetectZeroesOptions = enum("BlockdevDetectZeroesOptions", "off", "on", "unmap")
	tImageInfo                   = object("ImageInfo",
		req("filename", tStr), req("format", tStr), opt("dirty-flag", tBool),
		opt("actual-size", tInt), req("virtual-size", tInt))
	tBlockdevCacheInfo = object("BlockdevCacheInfo", req("writeback", tBool), req("direct", tBool), req("no-flush", tBool))
	tBlockDeviceInfo   = object("BlockDeviceInfo",
		req("file", tStr), opt("node-name", tStr), req("ro", tBool), req("drv", tStr),
		req("backing_file_depth", tInt), req("encrypted", tBool),
		req("detect_zeroes", tBlockdevDetectZeroesOptions),
		req("bps", tInt), req("bps_rd", tInt), req("bps_wr", tInt),
		req("iops", tInt), req("iops_rd", tInt), req("iops_wr", tInt),
		req("image", tImageInfo), req("cache", tBlockdevCacheInfo), req("write_threshold", tInt))
	tBlockInfo = object("BlockInfo",
		req("device", tStr), req("type", tStr), req("removable", tBool), req("locked", tBool),
		opt("inserted", tBlockDeviceInfo))

	// tBlockdevOptions is the union blockdev-add takes; its members are
	// the block layer's driver tables (see blockdevSchema).
	tBlockdevOptions = &qtype{meta: metaObject, name: "BlockdevOptions", blockOptions: true}

	tNameInfo = object("NameInfo", opt("name", tStr))
	tKvmInfo  = object("KvmInfo", req("enabled", tBool), req("present", tBool))

	tMachineInfo = object("MachineInfo",
		req("name", tStr), opt("alias", tStr), opt("is-default", tBool), req("cpu-max", tInt),
		req("hotpluggable-cpus", tBool), req("numa-mem-supported", tBool), req("deprecated", tBool),
		opt("default-cpu-type", tStr), opt("default-ram-id", tStr))

	tCommandLineParameterType = enum("CommandLineParameterType", "string", "boolean", "number", "size")
	tCommandLineOptionInfo    = object("CommandLineOptionInfo",
		req("option", tStr),
		req("parameters", arrayOf(object("CommandLineParameterInfo",
			req("name", tStr), req("type", tCommandLineParameterType), opt("help", tStr), opt("default", tStr)))))

	tShutdownCause = enum("ShutdownCause", "none", "host-error", "host-qmp-quit", "host-qmp-system-reset",
		"host-signal", "host-ui", "guest-shutdown", "guest-reset", "guest-panic", "subsystem-reset", "snapshot-load")
)

// tSchemaInfo is query-qmp-schema's own reply type.
var tSchemaInfo = func() *qtype {
	features := opt("features", arrayOf(tStr))
	metaTypes := enum("SchemaMetaType", "builtin", "enum", "array", "object", "alternate", "command", "event")
	info := object("SchemaInfo", req("name", tStr), req("meta-type", metaTypes), features)
	info.tag = "meta-type"
	info.variants = []variant{
		{"builtin", object("SchemaInfoBuiltin", req("json-type",
			enum("JSONType", "string", "number", "int", "boolean", "null", "object", "array", "value")))},
		{"enum", object("SchemaInfoEnum",
			req("members", arrayOf(object("SchemaInfoEnumMember", req("name", tStr), features))),
			req("values", arrayOf(tStr)))},
		{"array", object("SchemaInfoArray", req("element-type", tStr))},
		{"object", object("SchemaInfoObject",
			req("members", arrayOf(object("SchemaInfoObjectMember",
				req("name", tStr), req("type", tStr), opt("default", tAny), features))),
			opt("tag", tStr),
			opt("variants", arrayOf(object("SchemaInfoObjectVariant", req("case", tStr), req("type", tStr)))))},
		{"alternate", object("SchemaInfoAlternate",
			req("members", arrayOf(object("SchemaInfoAlternateMember", req("type", tStr)))))},
		{"command", object("SchemaInfoCommand", req("arg-type", tStr), req("ret-type", tStr), opt("allow-oob", tBool))},
		{"event", object("SchemaInfoEvent", req("arg-type", tStr))},
	}
	return info
}()

// events are the events minivmm emits, with their data types (nil: no
// data).
var events = map[string]*qtype{
	"STOP":      nil,
	"RESUME":    nil,
	"POWERDOWN": nil,
	"SHUTDOWN":  object("q_obj_SHUTDOWN-arg", req("guest", tBool), req("reason", tShutdownCause)),
	"RESET":     object("q_obj_RESET-arg", req("guest", tBool), req("reason", tShutdownCause)),
	"BLOCK_IMAGE_CORRUPTED": object("q_obj_BLOCK_IMAGE_CORRUPTED-arg",
		req("device", tStr), opt("node-name", tStr), req("msg", tStr),
		opt("offset", tInt), opt("size", tInt), req("fatal", tBool)),
	"BLOCK_EXPORT_DELETED": tBlockExportDeleted,
	"BLOCK_IO_ERROR": object("q_obj_BLOCK_IO_ERROR-arg",
		req("device", tStr), opt("node-name", tStr),
		req("operation", enum("IoOperationType", "read", "write")),
		req("action", enum("BlockErrorAction", "ignore", "report", "stop")),
		opt("nospace", tBool), req("reason", tStr)),
}
