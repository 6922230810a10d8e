package bootenv

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Env is a bootloader environment.
type Env interface {
	// Get returns the variables named, or every variable when no name is
	// given. A name that is not set is absent from the map.
	Get(ctx context.Context, names ...string) (map[string]string, error)
	// Set changes several variables in one write: after a power cut the
	// bootloader sees either all of them or none (see each backend for how
	// far that holds). An empty value deletes the variable.
	Set(ctx context.Context, vars map[string]string) error
}

// Compile-time checks that every backend is an Env.
var (
	_ Env = (*UBoot)(nil)
	_ Env = (*GRUB)(nil)
	_ Env = (*File)(nil)
	_ Env = (*Tools)(nil)
)

// Errors callers can test for with errors.Is.
var (
	// ErrNoValidEnv: no copy of a U-Boot environment has a valid CRC. U-Boot
	// itself would boot with its built-in default environment, which this
	// package cannot know; see UBootOptions.Default.
	ErrNoValidEnv = errors.New("bootenv: no valid environment (bad CRC on every copy)")
	// ErrTooLarge: the variables do not fit in the environment's fixed size.
	ErrTooLarge = errors.New("bootenv: variables do not fit in the environment")
	// ErrCorrupt: the stored environment cannot be parsed.
	ErrCorrupt = errors.New("bootenv: corrupt environment")
	// ErrInvalidName: a variable name the bootloader cannot store.
	ErrInvalidName = errors.New("bootenv: invalid variable name")
	// ErrInvalidValue: a value the backend cannot store.
	ErrInvalidValue = errors.New("bootenv: invalid value")
	// ErrConfig: an fw_env.config this package cannot use.
	ErrConfig = errors.New("bootenv: invalid fw_env.config")
	// ErrUnsupported: a storage this package does not write (UBI volumes,
	// MTD outside Linux).
	ErrUnsupported = errors.New("bootenv: unsupported environment storage")
	// ErrState: the Mender variables do not describe a boot state.
	ErrState = errors.New("bootenv: invalid boot state")
)

// The variables of the Mender convention (see the package documentation).
const (
	VarBootPart         = "mender_boot_part"
	VarBootPartHex      = "mender_boot_part_hex"
	VarUpgradeAvailable = "upgrade_available"
	VarBootCount        = "bootcount"
)

// checkName reports whether every backend can store name: not empty, and
// without '=' (the separator), NUL (the U-Boot record end) or newline (the
// GRUB and file record end).
func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "=\x00\n") {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	return nil
}

// checkValue reports whether every backend can store value: U-Boot records
// end with NUL, so no value may hold one.
func checkValue(name, value string) error {
	if strings.IndexByte(value, 0) >= 0 {
		return fmt.Errorf("%w: %s holds a NUL byte", ErrInvalidValue, name)
	}
	return nil
}

func checkVars(vars map[string]string) error {
	for name, value := range vars {
		if err := checkName(name); err != nil {
			return err
		}
		if err := checkValue(name, value); err != nil {
			return err
		}
	}
	return nil
}

// sortedNames returns the keys of m in byte order, the order libubootenv
// stores variables in.
func sortedNames(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// pick returns the named variables of all (every one when names is empty).
func pick(all map[string]string, names []string) map[string]string {
	if len(names) == 0 {
		return all
	}
	out := make(map[string]string, len(names))
	for _, n := range names {
		if v, ok := all[n]; ok {
			out[n] = v
		}
	}
	return out
}

// apply returns cur with vars applied (empty value deletes) and whether
// anything changed. cur is not modified.
func apply(cur, vars map[string]string) (map[string]string, bool) {
	next := make(map[string]string, len(cur)+len(vars))
	for k, v := range cur {
		next[k] = v
	}
	changed := false
	for k, v := range vars {
		old, had := next[k]
		if v == "" {
			if had {
				delete(next, k)
				changed = true
			}
			continue
		}
		if !had || old != v {
			next[k] = v
			changed = true
		}
	}
	return next, changed
}

// State is the boot state the Mender variables describe.
type State struct {
	// Part is the partition number the bootloader boots (mender_boot_part).
	Part int
	// UpgradeAvailable: Part is on trial and has not been committed.
	UpgradeAvailable bool
	// BootCount counts the boots of the trial so far.
	BootCount int
}

// ReadState reads the Mender variables. mender_boot_part must be set;
// mender_boot_part_hex, when set, must name the same partition (the kernel
// and the root filesystem would otherwise come from different partitions);
// upgrade_available and bootcount default to 0.
func ReadState(ctx context.Context, env Env) (State, error) {
	vars, err := env.Get(ctx, VarBootPart, VarBootPartHex, VarUpgradeAvailable, VarBootCount)
	if err != nil {
		return State{}, err
	}
	var st State
	p, ok := vars[VarBootPart]
	if !ok {
		return State{}, fmt.Errorf("%w: %s is not set", ErrState, VarBootPart)
	}
	if st.Part, err = strconv.Atoi(p); err != nil || st.Part <= 0 {
		return State{}, fmt.Errorf("%w: %s=%q is not a partition number", ErrState, VarBootPart, p)
	}
	if h, ok := vars[VarBootPartHex]; ok {
		n, err := strconv.ParseUint(h, 16, 32)
		if err != nil || int(n) != st.Part {
			return State{}, fmt.Errorf("%w: %s=%q but %s=%q", ErrState, VarBootPart, p, VarBootPartHex, h)
		}
	}
	switch u := vars[VarUpgradeAvailable]; u {
	case "", "0":
	case "1":
		st.UpgradeAvailable = true
	default:
		return State{}, fmt.Errorf("%w: %s=%q", ErrState, VarUpgradeAvailable, u)
	}
	if c, ok := vars[VarBootCount]; ok {
		if st.BootCount, err = strconv.Atoi(c); err != nil || st.BootCount < 0 {
			return State{}, fmt.Errorf("%w: %s=%q", ErrState, VarBootCount, c)
		}
	}
	return st, nil
}

func partVars(part int) (map[string]string, error) {
	if part <= 0 {
		return nil, fmt.Errorf("%w: partition number %d", ErrState, part)
	}
	return map[string]string{
		VarBootPart:    strconv.Itoa(part),
		VarBootPartHex: strconv.FormatInt(int64(part), 16),
	}, nil
}

// Switch is the boot switch: the next boot tries partition part, on trial
// (mender_boot_part, mender_boot_part_hex, upgrade_available=1 and
// bootcount=0 in one write).
func Switch(ctx context.Context, env Env, part int) error {
	vars, err := partVars(part)
	if err != nil {
		return err
	}
	vars[VarUpgradeAvailable] = "1"
	vars[VarBootCount] = "0"
	return env.Set(ctx, vars)
}

// Commit makes the running trial permanent: upgrade_available=0, bootcount=0.
func Commit(ctx context.Context, env Env) error {
	return env.Set(ctx, map[string]string{VarUpgradeAvailable: "0", VarBootCount: "0"})
}

// Rollback points the bootloader back at partition part, with no trial.
func Rollback(ctx context.Context, env Env, part int) error {
	vars, err := partVars(part)
	if err != nil {
		return err
	}
	vars[VarUpgradeAvailable] = "0"
	vars[VarBootCount] = "0"
	return env.Set(ctx, vars)
}
