package cli

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestCheckedFlags(t *testing.T) {
	var i int
	var i64 int64
	var f float32
	var d time.Duration
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	Int(fs, &i, "count", "n", 3, 1, 10, "")
	Int(fs, &i, "open", "", 0, 0, math.MaxInt32, "")
	Int64Func(fs, &i64, "seed", "", -1, func(v int64) error {
		if v < -1 {
			return errErr
		}
		return nil
	}, "")
	Float32(fs, &f, "p", "", 0.5, 0, 1, "")
	IntFunc(fs, &i, "bits", "", 4, OneOf(2, 4), "")
	Duration(fs, &d, "grace", "", time.Second, time.Millisecond, time.Hour, "")
	Duration(fs, &d, "wait", "", time.Second, time.Second, math.MaxInt64, "")
	for _, tc := range []struct {
		arg, want string // want: "" accepts, else a part of the error
	}{
		{"--count=5", ""}, {"-n=10", ""}, {"--count=0", "want an integer in [1, 10]"}, {"--count=x", "want an integer"},
		{"--open=-1", "want an integer ≥ 0"}, {"--seed=-1", ""}, {"--seed=-2", "bad"},
		{"--p=1", ""}, {"--p=1.5", "want a number in [0, 1]"}, {"--p=NaN", "finite"}, {"--p=Inf", "finite"},
		{"--bits=2", ""}, {"--bits=3", "want one of [2 4]"},
		{"--grace=1ms", ""}, {"--grace=1h", ""}, {"--grace=0s", "want a duration in [1ms, 1h0m0s]"},
		{"--grace=2h", "in [1ms"}, {"--grace=-1s", "in [1ms"}, {"--grace=5", "want a duration such as"},
		{"--wait=1000h", ""}, {"--wait=0s", "want a duration ≥ 1s"},
	} {
		err := fs.Parse([]string{tc.arg})
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s refused: %v", tc.arg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want %q", tc.arg, err, tc.want)
		}
	}
	NoDefault(fs.Lookup("p"))
	if strings.Contains(fs.FlagUsages(), "default 0.5") {
		t.Error("NoDefault flag still shows its default")
	}
}

type errString string

func (e errString) Error() string { return string(e) }

const errErr = errString("bad")
