package quorum

import (
	"encoding/json"
	"strings"
	"testing"

	"minivmm/block"
	"minivmm/internal/jsonval"
)

func TestParseConfig(t *testing.T) {
	two := []any{"a", "b"}
	three := []any{"a", "b", "c"}
	for _, tc := range []struct {
		name string
		opts block.Options
		err  string // "" : valid
		want config
	}{
		{"list of names", block.Options{"children": three, "vote-threshold": int64(2)}, "",
			config{children: three, threshold: 2}},
		{"keyval indices", block.Options{"children": block.Options{"1": block.Options{"driver": "file"}, "0": "a"}, "vote-threshold": int64(1)}, "",
			config{children: []any{"a", block.Options{"driver": "file"}}, threshold: 1}},
		{"json objects", block.Options{"children": []any{map[string]any{"driver": "null-co"}}, "vote-threshold": int64(1)}, "",
			config{children: []any{block.Options{"driver": "null-co"}}, threshold: 1}},
		{"keyval list", block.FromKeyval(map[string]any{"children": []any{"a", map[string]any{"driver": "file", "read-only": "on"}}, "vote-threshold": "2"}), "",
			config{children: []any{"a", block.Options{"driver": "file", "read-only": "on"}}, threshold: 2}},
		{"fifo", block.Options{"children": two, "vote-threshold": int64(1), "read-pattern": "fifo", "blkverify": true}, "",
			config{children: two, threshold: 1, fifo: true}},
		{"blkverify", block.Options{"children": two, "vote-threshold": int64(2), "blkverify": true}, "",
			config{children: two, threshold: 2, blkverify: true}},
		{"rewrite", block.Options{"children": three, "vote-threshold": int64(2), "rewrite-corrupted": true}, "",
			config{children: three, threshold: 2, rewrite: true}},
		{"no children", block.Options{"children": []any{}, "vote-threshold": int64(1)}, "Number of provided children must be 1 or more", config{}},
		{"children missing", block.Options{"vote-threshold": int64(1)}, "Number of provided children must be 1 or more", config{}},
		{"gap", block.Options{"children": block.Options{"0": "a", "2": "b"}, "vote-threshold": int64(1)}, "Option children is not a valid array", config{}},
		{"not from 0", block.Options{"children": block.Options{"1": "a"}, "vote-threshold": int64(1)}, "Option children is not a valid array", config{}},
		{"stray key", block.Options{"children": block.Options{"0": "a", "x": "b"}, "vote-threshold": int64(1)}, "Option children is not a valid array", config{}},
		{"a number", block.Options{"children": int64(3), "vote-threshold": int64(1)}, "Option children is not a valid array", config{}},
		{"bad entry", block.Options{"children": []any{true}, "vote-threshold": int64(1)}, "Invalid parameter type for 'children.0', expected: string", config{}},
		{"threshold 0", block.Options{"children": two, "vote-threshold": int64(0)}, "Parameter 'vote-threshold' expects a value >= 1", config{}},
		{"threshold too big", block.Options{"children": two, "vote-threshold": int64(3)}, "threshold may not exceed children count", config{}},
		{"pattern", block.Options{"children": two, "vote-threshold": int64(1), "read-pattern": "random"}, "Please set read-pattern as fifo or quorum", config{}},
		{"blkverify three", block.Options{"children": three, "vote-threshold": int64(2), "blkverify": true},
			"blkverify=on can only be set if there are exactly two files and vote-threshold is 2", config{}},
		{"blkverify threshold 1", block.Options{"children": two, "vote-threshold": int64(1), "blkverify": true},
			"blkverify=on can only be set if there are exactly two files and vote-threshold is 2", config{}},
		{"blkverify rewrite", block.Options{"children": two, "vote-threshold": int64(2), "blkverify": true, "rewrite-corrupted": true},
			"rewrite-corrupted=on cannot be used with blkverify=on", config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseConfig(tc.opts)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("got %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(got.children)
			w, _ := json.Marshal(tc.want.children)
			if string(g) != string(w) || got.threshold != tc.want.threshold || got.blkverify != tc.want.blkverify ||
				got.rewrite != tc.want.rewrite || got.fifo != tc.want.fifo {
				t.Fatalf("got %+v (%s), want %+v (%s)", got, g, tc.want, w)
			}
		})
	}
}

func TestWinner(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []string // per child; "!" failed
		want string   // the winner's data
		n    int      // its votes
	}{
		{"all agree", []string{"a", "a", "a"}, "a", 3},
		{"majority", []string{"a", "b", "a"}, "a", 2},
		{"tie: the version seen last wins", []string{"a", "b"}, "b", 1},
		{"tie of two pairs", []string{"a", "b", "b", "a"}, "b", 2},
		{"failed children do not vote", []string{"!", "b", "a", "a"}, "a", 2},
		{"all differ", []string{"a", "b", "c"}, "c", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bufs := make([][]byte, len(tc.data))
			ok := make([]bool, len(tc.data))
			for i, d := range tc.data {
				bufs[i], ok[i] = []byte(d), d != "!"
			}
			vs := voteData(bufs, ok)
			w := vs[winner(vs)]
			if string(bufs[w.first]) != tc.want || len(w.items) != tc.n {
				t.Fatalf("winner %q with %d votes, want %q with %d", bufs[w.first], len(w.items), tc.want, tc.n)
			}
		})
	}
}

// FuzzParseConfig: any JSON object as a quorum's options is taken or
// refused with an error, and what is taken holds QEMU's invariants.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"children": ["a", "b", "c"], "vote-threshold": 2}`,
		`{"children": {"0": "a", "1": {"driver": "file", "filename": "x"}}, "vote-threshold": 1, "read-pattern": "fifo"}`,
		`{"children": [{"driver": "null-co"}, "b"], "vote-threshold": 2, "blkverify": true}`,
		`{"children": {"0": "a", "2": "b"}, "vote-threshold": 1}`,
		`{"children": [], "vote-threshold": 0, "rewrite-corrupted": true}`,
		`{"children": "a", "vote-threshold": "x"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := jsonval.Decode([]byte(s))
		m, ok := v.(map[string]any)
		if err != nil || !ok {
			return
		}
		o := block.Options{}
		for k, v := range m {
			if sub, ok := v.(map[string]any); ok {
				v = block.Options(sub)
			}
			o[k] = v
		}
		c, err := parseConfig(o)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatal("an error without words")
			}
			return
		}
		if len(c.children) == 0 || c.threshold < 1 || c.threshold > len(c.children) {
			t.Fatalf("taken: %+v", c)
		}
		if c.blkverify && (c.rewrite || len(c.children) != 2 || c.threshold != 2 || c.fifo) {
			t.Fatalf("blkverify taken with %+v", c)
		}
		for _, ch := range c.children {
			switch ch.(type) {
			case string, block.Options:
			default:
				t.Fatalf("child %T", ch)
			}
		}
	})
}
