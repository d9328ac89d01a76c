package cli

import (
	"fmt"
	"math"
	"strconv"

	"github.com/spf13/pflag"
)

// Range-checked numeric flags. A value outside the flag's range is refused
// when the command line is parsed, so the error names the flag, for example
//
//	invalid argument "2" for "--top-p" flag: want a number in [0, 1]
//
// instead of a silently clamped (or silently random) setting.

// intValue is an int flag with a validity check.
type intValue struct {
	p     *int
	check func(int) error
}

func (v *intValue) String() string { return strconv.Itoa(*v.p) }
func (v *intValue) Type() string   { return "int" }
func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("want an integer")
	}
	if err := v.check(n); err != nil {
		return err
	}
	*v.p = n
	return nil
}

// IntFunc defines an int flag (with an optional one-letter shorthand) whose
// values check accepts.
func IntFunc(fs *pflag.FlagSet, p *int, name, short string, def int, check func(int) error, usage string) *pflag.Flag {
	*p = def
	return fs.VarPF(&intValue{p, check}, name, short, usage)
}

// Int defines an int flag whose values must lie in [lo, hi].
func Int(fs *pflag.FlagSet, p *int, name, short string, def, lo, hi int, usage string) *pflag.Flag {
	return IntFunc(fs, p, name, short, def, func(n int) error {
		if n < lo || n > hi {
			return fmt.Errorf("want an integer %s", span(float64(lo), float64(hi), math.MaxInt))
		}
		return nil
	}, usage)
}

// int64Value is an int64 flag with a validity check.
type int64Value struct {
	p     *int64
	check func(int64) error
}

func (v *int64Value) String() string { return strconv.FormatInt(*v.p, 10) }
func (v *int64Value) Type() string   { return "int" }
func (v *int64Value) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("want an integer")
	}
	if err := v.check(n); err != nil {
		return err
	}
	*v.p = n
	return nil
}

// Int64Func defines an int64 flag whose values check accepts.
func Int64Func(fs *pflag.FlagSet, p *int64, name, short string, def int64, check func(int64) error, usage string) *pflag.Flag {
	*p = def
	return fs.VarPF(&int64Value{p, check}, name, short, usage)
}

// float32Value is a float32 flag with a range.
type float32Value struct {
	p      *float32
	lo, hi float64
}

func (v *float32Value) String() string { return strconv.FormatFloat(float64(*v.p), 'g', -1, 32) }
func (v *float32Value) Type() string   { return "float" }
func (v *float32Value) Set(s string) error {
	f, err := strconv.ParseFloat(s, 32)
	if err != nil || math.IsNaN(f) || f < v.lo || f > v.hi {
		return fmt.Errorf("want a number %s", span(v.lo, v.hi, math.MaxFloat32))
	}
	*v.p = float32(f)
	return nil
}

// Float32 defines a float32 flag whose values must lie in [lo, hi] (NaN never
// does); hi may be math.MaxFloat32 for "no upper bound".
func Float32(fs *pflag.FlagSet, p *float32, name, short string, def float32, lo, hi float64, usage string) *pflag.Flag {
	*p = def
	return fs.VarPF(&float32Value{p, lo, hi}, name, short, usage)
}

// span describes [lo, hi] for an error message; hi == unbounded reads "≥ lo".
func span(lo, hi, unbounded float64) string {
	if hi >= unbounded {
		return fmt.Sprintf("≥ %g", lo)
	}
	return fmt.Sprintf("in [%g, %g]", lo, hi)
}

// NoDefault hides a flag's default in the help text, for flags whose usage
// explains a default that depends on the model (pflag would print the
// placeholder value as a second, wrong default).
func NoDefault(f *pflag.Flag) { f.DefValue = "" }
