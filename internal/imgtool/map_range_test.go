package imgtool

import "testing"

// TestImgMapRangeInterop: map --start-offset/--max-length (and
// --object), by both tools.
func TestImgMapRangeInterop(t *testing.T) {
	setup := []diffStep{
		img("create", "-f", "qcow2", "c.qcow2", "1M"),
		qio("-c", "write -P 1 0 64k", "-c", "write -c -P 4 256k 64k", "-c", "write -z 512k 64k", "c.qcow2"),
	}
	var steps []diffStep
	for _, out := range []string{"human", "json"} {
		for _, r := range [][]string{
			{"--start-offset", "60k", "--max-length", "100k"}, {"--start-offset", "2M"}, {"--max-length", "1.5k"},
			{"--start-offset=300k"}, {"--start-offset", "x"}, {"--max-length", "-1"}, {"--start-offset", "1000k", "--max-length", "1T"},
			{"--object", "secret,id=a,data=b"},
		} {
			steps = append(steps, img(append(append([]string{"map", "--output=" + out}, r...), "c.qcow2")...))
		}
	}
	runDiffCases(t, []diffCase{{name: "map", setup: setup, steps: steps, images: []string{"c.qcow2"}}})
}
