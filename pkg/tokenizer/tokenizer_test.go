package tokenizer

import (
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// TestConcurrentEncode runs Encode from several goroutines on one tokenizer
// (sharing its word cache) and compares with a serial run.
func TestConcurrentEncode(t *testing.T) {
	src := mustLoad(t, filepath.Join(qwen3Dir, "tokenizer.json"))
	cases := readRefCases(t, filepath.Join(qwen3Dir, "reference-dev.json"))
	tk := viaBinary(t, src) // a fresh cache
	var wg sync.WaitGroup
	errs := make(chan string, 8*len(cases))
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range cases {
				c := cases[(i+g*25)%len(cases)]
				if got := tk.Encode(c.Text); !slices.Equal(got, c.IDs) {
					errs <- c.Text
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for text := range errs {
		t.Errorf("concurrent Encode(%q) differs", text)
	}
}
