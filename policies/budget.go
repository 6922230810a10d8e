package policies

import (
	"errors"
	"fmt"
	"time"
)

// A Budget bounds what a fleet repository's own policy files may cost to
// evaluate. They are untrusted input: a few lines of CUE (comprehensions
// nested over large lists, values shared exponentially, strings built by
// repetition) can keep a core busy for hours or ask for gigabytes. The CUE
// evaluator cannot be interrupted, so those files run in a separate
// process (see the package documentation) that is killed when it goes
// over its budget; the commit is then refused with an error naming the
// policy file and the budget, and nothing else waits for it.
//
// The zero value of each field means its default.
type Budget struct {
	// Time is the wall-clock time the repository's policy files of one
	// commit may take together, the fleet's encoding included. Default
	// DefaultTime.
	Time time.Duration

	// Memory is the memory the evaluating process may take on top of
	// what it needs to start, in bytes (an address-space limit: the
	// heap of the evaluation, the fleet's data included). Default
	// DefaultMemory.
	Memory int64

	// Output is the size of the findings (violations and errors, JSON),
	// in bytes. Default DefaultOutput.
	Output int64
}

// The default budget. Measured on a 2-core machine: a policy over every
// device of a 10,000-device fleet takes about 1 s and under 200 MiB (the
// whole validate); the same policy over 100,000 devices takes about 35 s
// and 1.4 GiB, so fleets that large with policies over every device raise
// the budget (the built-in packs do not count against it).
const (
	DefaultTime   = 20 * time.Second
	DefaultMemory = 1 << 30 // 1 GiB
	DefaultOutput = 8 << 20 // 8 MiB
)

// DefaultBudget returns the default budget.
func DefaultBudget() Budget {
	return Budget{Time: DefaultTime, Memory: DefaultMemory, Output: DefaultOutput}
}

// withDefaults returns b with its zero fields set to their defaults.
func (b Budget) withDefaults() Budget {
	if b.Time <= 0 {
		b.Time = DefaultTime
	}
	if b.Memory <= 0 {
		b.Memory = DefaultMemory
	}
	if b.Output <= 0 {
		b.Output = DefaultOutput
	}
	return b
}

// ErrBudget is wrapped by a *BudgetError.
var ErrBudget = errors.New("policies: over budget")

// A BudgetError says that evaluating a policy file went over its budget.
type BudgetError struct {
	File  string // the policy file being evaluated when it happened
	What  string // "time", "memory" or "output"
	Limit string // the budget, as the flag that raises it takes it ("20s", "1GiB")
	Flag  string // the flag of gitfleet validate, plan and serve that raises it
}

func (e *BudgetError) Error() string {
	return fmt.Sprintf("policy evaluation went over its %s budget of %s and was stopped; "+
		"make the policy cheaper (fewer nested comprehensions over large lists, no large generated values) "+
		"or raise the budget with %s", e.What, e.Limit, e.Flag)
}

func (e *BudgetError) Unwrap() error { return ErrBudget }

// formatBytes writes n bytes in the unit the flags take: 1GiB, 512MiB,
// 64KiB, or bytes.
func formatBytes(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}
