package refmodel

import "math"

// RowDiff compares one row of runtime logits with the reference row.
type RowDiff struct {
	// RelErr is max|got − ref| / max|ref| (the project's tolerance measure).
	RelErr float64
	// ArgmaxGot and ArgmaxRef are the top tokens; Margin is the reference's
	// top-1 minus top-2 logit (argmax equality is only meaningful when it is
	// clearly positive).
	ArgmaxGot, ArgmaxRef int
	Margin               float64
}

// CompareRow compares a float32 logits row with a float64 reference row of
// the same length.
func CompareRow(got []float32, ref []float64) RowDiff {
	var maxDiff, maxRef float64
	d := RowDiff{}
	best, second := math.Inf(-1), math.Inf(-1)
	bestGot := math.Inf(-1)
	for i, r := range ref {
		g := float64(got[i])
		maxDiff = math.Max(maxDiff, math.Abs(g-r))
		maxRef = math.Max(maxRef, math.Abs(r))
		if r > best {
			best, second = r, best
			d.ArgmaxRef = i
		} else if r > second {
			second = r
		}
		if g > bestGot {
			bestGot = g
			d.ArgmaxGot = i
		}
	}
	d.RelErr = maxDiff / maxRef
	d.Margin = best - second
	return d
}
