package block

import "maps"

// Schema is what a node of driver d accepts, as the graph checks it: every
// option with its type (the generic ones included) and the options a node
// must be given. The monitor renders it for query-qmp-schema, so the
// introspection cannot drift from the checks. The caller owns the map.
func (d *Driver) Schema() (options map[string]OptType, required []string) {
	return maps.Clone(d.schema()), d.required()
}

// CacheOptions are the members of the generic "cache" object option.
func CacheOptions() map[string]OptType { return maps.Clone(cacheOptions) }
