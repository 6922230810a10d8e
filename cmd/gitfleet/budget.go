package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/gitfleet/gitfleet/policies"
)

// addBudgetFlags adds the flags that set the budget of a fleet
// repository's own policies (see policies.Budget) to f, with the defaults
// of the controller.
func addBudgetFlags(f *pflag.FlagSet, b *policies.Budget) {
	*b = policies.DefaultBudget()
	f.DurationVar(&b.Time, "policy-timeout", b.Time,
		"wall-clock `time` the repository's policies/*.cue may take together; a policy over it fails validation")
	f.Var((*sizeFlag)(&b.Memory), "policy-memory",
		"`memory` the repository's policies may use (such as 512MiB, 2GiB); a policy over it fails validation")
	f.Var((*sizeFlag)(&b.Output), "policy-output",
		"`size` of the violations and errors the repository's policies may report (such as 8MiB)")
}

// checkBudget refuses a budget that would refuse every policy.
func checkBudget(b policies.Budget) error {
	if b.Time <= 0 {
		return fmt.Errorf("--policy-timeout: want a positive duration such as 20s, not %s", b.Time)
	}
	if b.Memory < 16<<20 {
		return fmt.Errorf("--policy-memory: want at least 16MiB, not %d bytes", b.Memory)
	}
	if b.Output < 4<<10 {
		return fmt.Errorf("--policy-output: want at least 4KiB, not %d bytes", b.Output)
	}
	return nil
}

// sizeFlag is a size in bytes written with a binary unit: 512MiB, 2GiB,
// 64KiB (K, M and G mean the same), or a number of bytes.
type sizeFlag int64

func (s *sizeFlag) String() string {
	n := int64(*s)
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

func (s *sizeFlag) Set(v string) error {
	num, unit := v, ""
	if i := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' }); i >= 0 {
		num, unit = v[:i], v[i:]
	}
	var mult int64
	switch strings.ToLower(unit) {
	case "", "b":
		mult = 1
	case "k", "kib":
		mult = 1 << 10
	case "m", "mib":
		mult = 1 << 20
	case "g", "gib":
		mult = 1 << 30
	default:
		return fmt.Errorf("unknown unit %q (want KiB, MiB or GiB)", unit)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return fmt.Errorf("want a positive size such as 512MiB, not %q", v)
	}
	*s = sizeFlag(n * mult)
	return nil
}

func (s *sizeFlag) Type() string { return "size" }
