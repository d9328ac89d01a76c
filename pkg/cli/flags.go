package cli

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/spf13/pflag"
)

// Range-checked numeric flags. A value outside the flag's range is refused
// when the command line is parsed, so the error names the flag, for example
//
//	invalid argument "2" for "--top-p" flag: want a number in [0, 1]
//
// instead of a silently clamped (or silently random) setting.

// checked is a numeric flag value with a validity check.
type checked[T int | int64 | float32 | time.Duration] struct {
	p      *T
	typ    string
	parse  func(string) (T, error)
	format func(T) string
	check  func(T) error
}

func (v *checked[T]) String() string { return v.format(*v.p) }
func (v *checked[T]) Type() string   { return v.typ }
func (v *checked[T]) Set(s string) error {
	n, err := v.parse(s)
	if err != nil {
		return err
	}
	if err := v.check(n); err != nil {
		return err
	}
	*v.p = n
	return nil
}

func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, errors.New("want an integer")
	}
	return n, nil
}

func parseInt64(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New("want an integer")
	}
	return n, nil
}

func parseFloat32(s string) (float32, error) {
	f, err := strconv.ParseFloat(s, 32)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errors.New("want a finite number")
	}
	return float32(f), nil
}

// IntFunc defines an int flag (with an optional one-letter shorthand) whose
// values check accepts.
func IntFunc(fs *pflag.FlagSet, p *int, name, short string, def int, check func(int) error, usage string) *pflag.Flag {
	*p = def
	return fs.VarPF(&checked[int]{p, "int", parseInt, strconv.Itoa, check}, name, short, usage)
}

// Int defines an int flag whose values must lie in [lo, hi]; hi ≥
// math.MaxInt32 means no upper bound worth mentioning.
func Int(fs *pflag.FlagSet, p *int, name, short string, def, lo, hi int, usage string) *pflag.Flag {
	return IntFunc(fs, p, name, short, def, func(n int) error {
		switch {
		case (n < lo || n > hi) && hi >= math.MaxInt32:
			return fmt.Errorf("want an integer ≥ %d", lo)
		case n < lo || n > hi:
			return fmt.Errorf("want an integer in [%d, %d]", lo, hi)
		}
		return nil
	}, usage)
}

// Int64Func defines an int64 flag whose values check accepts.
func Int64Func(fs *pflag.FlagSet, p *int64, name, short string, def int64, check func(int64) error, usage string) *pflag.Flag {
	*p = def
	format := func(n int64) string { return strconv.FormatInt(n, 10) }
	return fs.VarPF(&checked[int64]{p, "int", parseInt64, format, check}, name, short, usage)
}

// Float32Func defines a float32 flag whose finite values check accepts (NaN
// and infinities never are).
func Float32Func(fs *pflag.FlagSet, p *float32, name, short string, def float32, check func(float64) error, usage string) *pflag.Flag {
	*p = def
	format := func(f float32) string { return strconv.FormatFloat(float64(f), 'g', -1, 32) }
	wrapped := func(f float32) error { return check(float64(f)) }
	return fs.VarPF(&checked[float32]{p, "float", parseFloat32, format, wrapped}, name, short, usage)
}

// Float32 defines a float32 flag whose values must lie in [lo, hi]; hi may
// be math.MaxFloat32 for "no upper bound".
func Float32(fs *pflag.FlagSet, p *float32, name, short string, def float32, lo, hi float64, usage string) *pflag.Flag {
	return Float32Func(fs, p, name, short, def, func(f float64) error {
		switch {
		case (f < lo || f > hi) && hi >= math.MaxFloat32:
			return fmt.Errorf("want a number ≥ %g", lo)
		case f < lo || f > hi:
			return fmt.Errorf("want a number in [%g, %g]", lo, hi)
		}
		return nil
	}, usage)
}

// Duration defines a duration flag (Go syntax: 30s, 2m, 1h30m) whose values
// must lie in [lo, hi]; hi = math.MaxInt64 means no upper bound.
func Duration(fs *pflag.FlagSet, p *time.Duration, name, short string, def, lo, hi time.Duration, usage string) *pflag.Flag {
	*p = def
	parse := func(s string) (time.Duration, error) {
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, errors.New("want a duration such as 30s or 2m")
		}
		return d, nil
	}
	check := func(d time.Duration) error {
		switch {
		case (d < lo || d > hi) && hi == math.MaxInt64:
			return fmt.Errorf("want a duration ≥ %v", lo)
		case d < lo || d > hi:
			return fmt.Errorf("want a duration in [%v, %v]", lo, hi)
		}
		return nil
	}
	return fs.VarPF(&checked[time.Duration]{p, "duration", parse, time.Duration.String, check}, name, short, usage)
}

// OneOf accepts only the listed values.
func OneOf(values ...int) func(int) error {
	return func(n int) error {
		for _, v := range values {
			if n == v {
				return nil
			}
		}
		return fmt.Errorf("want one of %v", values)
	}
}

// NoDefault hides a flag's default in the help text, for flags whose usage
// explains a default that depends on the model (pflag would print the
// placeholder value as a second, wrong default).
func NoDefault(f *pflag.Flag) { f.DefValue = "" }
