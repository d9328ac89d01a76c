package tokenizer

import (
	"hash/maphash"
	"math/bits"
)

// textIndex maps token texts to ids. All texts are spans of one string and
// the table holds no pointers, so building it for 151k tokens is a few
// milliseconds and adds nothing for the garbage collector to scan — a Go
// map[string]int32 costs several times more, which showed in load times.
type textIndex struct {
	text  string
	spans []textSpan
	slots []uint32 // index into spans + 1; 0 marks a free slot
	seed  maphash.Seed
}

type textSpan struct {
	start, end uint32
	id         int32
}

// newTextIndex indexes spans of text. When a text occurs twice the later
// span wins, as in a JSON object decoded into a map.
func newTextIndex(text string, spans []textSpan) *textIndex {
	size := 1 << bits.Len(uint(len(spans)*2+1)) // load factor ≤ 1/2
	x := &textIndex{text: text, spans: spans, slots: make([]uint32, size), seed: maphash.MakeSeed()}
	mask := uint64(size - 1)
	for i, sp := range spans {
		s := text[sp.start:sp.end]
		for slot := maphash.String(x.seed, s) & mask; ; slot = (slot + 1) & mask {
			e := x.slots[slot]
			if e == 0 {
				x.slots[slot] = uint32(i + 1)
				break
			}
			if old := spans[e-1]; text[old.start:old.end] == s {
				x.slots[slot] = uint32(i + 1)
				break
			}
		}
	}
	return x
}

func (x *textIndex) get(s string) (int32, bool) {
	mask := uint64(len(x.slots) - 1)
	for slot := maphash.String(x.seed, s) & mask; ; slot = (slot + 1) & mask {
		e := x.slots[slot]
		if e == 0 {
			return 0, false
		}
		if sp := x.spans[e-1]; x.text[sp.start:sp.end] == s {
			return sp.id, true
		}
	}
}
