package runtool

import (
	"encoding/json"
	"fmt"
	"time"
)

// report prints a workload's result, and says whether it is clean.
func (r *runner) report(res map[string]any) bool {
	f := func(v any) float64 {
		n, _ := v.(json.Number)
		x, _ := n.Float64()
		return x
	}
	elapsed := time.Duration(f(res["elapsed-ns"]))
	for _, dir := range []string{"read", "write", "verify"} {
		d, _ := res[dir].(map[string]any)
		if d == nil || f(d["ios"]) == 0 {
			continue
		}
		lat, _ := d["lat-ns"].(map[string]any)
		us := func(k string) string { return fmt.Sprintf("%.1f", f(lat[k])/1e3) }
		r.printf("  %-6s IOPS=%.0f, BW=%.1fMiB/s, %d requests in %v\n", dir+":", f(d["iops"]), f(d["bw"])/(1<<20), int64(f(d["ios"])), elapsed.Round(time.Millisecond))
		r.printf("         lat (usec): p50=%s, p90=%s, p99=%s, p99.9=%s, max=%s\n", us("p50"), us("p90"), us("p99"), us("p99.9"), us("max"))
	}
	r.printf("  verify: %d sectors checked, %d not known, %d mismatches\n",
		int64(f(res["checked-sectors"])), int64(f(res["unverified-sectors"])), int64(f(res["mismatch-count"])))
	if mm, _ := res["mismatches"].([]any); len(mm) > 0 {
		for _, m := range mm {
			mm, _ := m.(map[string]any)
			r.printf("    %v\n", mm["message"])
		}
	}
	if e, _ := res["first-io-error"].(string); e != "" {
		r.printf("  errors: %d (first: %s)\n", int64(f(res["io-errors"])), e)
	}
	return res["ok"] == true
}
