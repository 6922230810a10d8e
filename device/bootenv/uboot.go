package bootenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// UBootOptions configures a UBoot environment.
type UBootOptions struct {
	// Config is the fw_env.config to read. Default "/etc/fw_env.config".
	// Ignored when Devices is set.
	Config string
	// Devices, when set, are used instead of reading Config: one device for
	// a single environment, two for a redundant pair.
	Devices []Device
	// LockFile is taken (flock, exclusive) around every read and write, the
	// same lock fw_printenv and fw_setenv take, so the tools and the agent
	// never interleave. Default "/var/lock/fw_printenv.lock"; "-" disables
	// locking. If the lock file cannot be created the environment is used
	// unlocked, as libubootenv does.
	LockFile string
	// LockTimeout bounds the wait for the lock. Default 10s.
	LockTimeout time.Duration
	// Default is the environment assumed when no copy has a valid CRC (like
	// fw_setenv -f). Nil, the default, makes Get and Set fail with
	// ErrNoValidEnv instead: writing a partial environment over a corrupt
	// one would leave U-Boot without its bootcmd, where a corrupt one makes
	// it fall back to its built-in default.
	Default map[string]string
}

// UBoot is a U-Boot environment in the binary format U-Boot, fw_printenv and
// fw_setenv (libubootenv) share, read and written natively.
//
// Atomicity: with a redundant pair a write goes to the copy that is not
// current, with its flags counter one past the current copy's, and is synced
// before Set returns. The data area is written and synced before the header
// (CRC and flags), so until the header lands the copy fails its CRC and the
// old copy stays current; a power cut at any instant leaves one valid copy
// holding either the old or the new variables. On MTD flash the copy is
// erased and written in one pass (as libubootenv does); a cut during it
// leaves that copy's CRC bad and the other copy current. With a single copy
// the write is in place: a power cut during it can leave no valid
// environment, and U-Boot then boots its built-in default. Use a redundant
// environment on devices that update.
type UBoot struct {
	devs        []Device
	lockFile    string
	lockTimeout time.Duration
	def         map[string]string
	sysfs       string // root of /sys, for eMMC boot partition write protection

	mu sync.Mutex // serialises this value's users; the flock serialises processes
}

// NewUBoot reads the configuration (not the environment, which every Get and
// Set reads afresh).
func NewUBoot(opts UBootOptions) (*UBoot, error) {
	devs := opts.Devices
	if len(devs) == 0 {
		path := opts.Config
		if path == "" {
			path = "/etc/fw_env.config"
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		defer f.Close()
		if devs, err = ParseConfig(f); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	} else if err := checkDevices(devs); err != nil {
		return nil, err
	}
	u := &UBoot{
		devs:        append([]Device(nil), devs...),
		lockFile:    opts.LockFile,
		lockTimeout: opts.LockTimeout,
		sysfs:       "/sys",
	}
	if u.lockFile == "" {
		u.lockFile = "/var/lock/fw_printenv.lock"
	}
	if u.lockTimeout <= 0 {
		u.lockTimeout = 10 * time.Second
	}
	if opts.Default != nil {
		if err := checkVars(opts.Default); err != nil {
			return nil, fmt.Errorf("default environment: %w", err)
		}
		u.def = maps.Clone(opts.Default)
	}
	for _, d := range u.devs {
		if k := kindOf(d.Path); k == kindUBI {
			return nil, fmt.Errorf("%w: %s: UBI volumes are not supported yet; use the Tools backend", ErrUnsupported, d.Path)
		}
	}
	return u, nil
}

// Redundant reports whether the environment has two copies.
func (u *UBoot) Redundant() bool { return len(u.devs) == 2 }

// Get implements Env.
func (u *UBoot) Get(ctx context.Context, names ...string) (map[string]string, error) {
	unlock, err := u.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	ld, err := u.load()
	if err != nil {
		return nil, err
	}
	return pick(ld.vars, names), nil
}

// Set implements Env. When nothing changes nothing is written, which spares
// flash wear on devices that set the same values on every boot.
func (u *UBoot) Set(ctx context.Context, vars map[string]string) error {
	if err := checkVars(vars); err != nil {
		return err
	}
	unlock, err := u.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	ld, err := u.load()
	if err != nil {
		return err
	}
	next, changed := apply(ld.vars, vars)
	if !changed && ld.valid {
		return nil
	}
	return u.store(ld, next)
}

// loaded is the environment as read.
type loaded struct {
	vars    map[string]string
	valid   bool // false: vars is the Default
	current int  // copy the variables came from
	flags   byte // its flags byte (redundant)
	scheme  flagScheme
	devs    []*devFile
}

func (u *UBoot) load() (*loaded, error) {
	redundant := u.Redundant()
	ld := &loaded{}
	var states [2]copyState
	imgs := make([][]byte, len(u.devs))
	for i, d := range u.devs {
		df, err := probe(d, u.sysfs)
		if err != nil {
			return nil, err
		}
		ld.devs = append(ld.devs, df)
		if imgs[i], err = df.read(); err != nil {
			return nil, fmt.Errorf("read %s: %w", d.Path, err)
		}
		states[i] = checkCopy(imgs[i], redundant)
	}
	ld.scheme = ld.devs[0].scheme
	if redundant {
		if ld.devs[1].scheme != ld.scheme {
			return nil, fmt.Errorf("%w: copies on different kinds of storage (%s, %s)", ErrConfig, u.devs[0].Path, u.devs[1].Path)
		}
		ld.current, ld.valid = pickCopy(states, ld.scheme)
		ld.flags = states[ld.current].flags
	} else {
		ld.valid = states[0].ok
	}
	if !ld.valid {
		if u.def == nil {
			return nil, fmt.Errorf("%w: %s", ErrNoValidEnv, u.describe())
		}
		ld.vars = maps.Clone(u.def)
		return ld, nil
	}
	vars, err := parseData(imgs[ld.current][headerLen(redundant):])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u.devs[ld.current].Path, err)
	}
	ld.vars = vars
	return ld, nil
}

func (u *UBoot) describe() string {
	var b strings.Builder
	for i, d := range u.devs {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s at %#x size %#x", d.Path, d.Offset, d.EnvSize)
	}
	return b.String()
}

func (u *UBoot) store(ld *loaded, vars map[string]string) error {
	redundant := u.Redundant()
	target, flags := 0, byte(0)
	if redundant {
		target = 1 - ld.current
		flags = nextFlags(ld.flags, ld.scheme)
	}
	d := u.devs[target]
	img, err := encodeCopy(vars, int(d.EnvSize), redundant, flags)
	if err != nil {
		return err
	}
	if err := ld.devs[target].write(img, headerLen(redundant)); err != nil {
		return fmt.Errorf("write %s: %w", d.Path, err)
	}
	if redundant && ld.scheme == flagsBoolean {
		// NOR: mark the old copy obsolete; the new one already reads active.
		if err := ld.devs[ld.current].writeFlag(flagObsolete); err != nil {
			return fmt.Errorf("mark %s obsolete: %w", u.devs[ld.current].Path, err)
		}
	}
	return nil
}

// lock takes the lock fw_printenv/fw_setenv take, waiting at most
// lockTimeout or until ctx ends.
func (u *UBoot) lock(ctx context.Context) (func(), error) {
	u.mu.Lock()
	if u.lockFile == "-" {
		return u.mu.Unlock, nil
	}
	f, err := os.OpenFile(u.lockFile, os.O_WRONLY|os.O_CREATE, 0o666)
	if err != nil {
		// libubootenv carries on unlocked when it cannot open its lock.
		return u.mu.Unlock, nil
	}
	deadline := time.Now().Add(u.lockTimeout)
	wait := 2 * time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			u.mu.Unlock()
			return nil, fmt.Errorf("lock %s: %w", u.lockFile, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			u.mu.Unlock()
			return nil, fmt.Errorf("lock %s: still held by another process after %s", u.lockFile, u.lockTimeout)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			u.mu.Unlock()
			return nil, fmt.Errorf("lock %s: %w", u.lockFile, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
	return func() {
		f.Close() // releases the flock
		u.mu.Unlock()
	}, nil
}

// storage kinds, by path as libubootenv tells them apart.
type storageKind int

const (
	kindFile storageKind = iota // regular file or block device
	kindMTD                     // /dev/mtdN
	kindUBI                     // /dev/ubiX_Y, /dev/ubiX:name, /dev/mtdN:name
)

func kindOf(path string) storageKind {
	switch {
	case strings.HasPrefix(path, "/dev/mtd"):
		if strings.Contains(path, ":") {
			return kindUBI
		}
		return kindMTD
	case strings.HasPrefix(path, "/dev/ubi"):
		return kindUBI
	}
	return kindFile
}

// devFile is one copy's storage, probed.
type devFile struct {
	Device
	kind   storageKind
	scheme flagScheme
	mtd    mtdInfo // kindMTD
	sysfs  string

	badBlock func(off int64) (bool, error) // tests: replaces MEMGETBADBLOCK
}

func probe(d Device, sysfs string) (*devFile, error) {
	df := &devFile{Device: d, kind: kindOf(d.Path), scheme: flagsCounter, sysfs: sysfs}
	f, err := os.Open(d.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if df.kind == kindMTD {
		if fi.Mode()&os.ModeCharDevice == 0 {
			df.kind = kindFile // a plain file named like an MTD device
		} else {
			if df.mtd, err = mtdGetInfo(f); err != nil {
				return nil, fmt.Errorf("%s: %w", d.Path, err)
			}
			switch df.mtd.typ {
			case mtdNOR:
				df.scheme = flagsBoolean
			case mtdNAND:
			default:
				return nil, fmt.Errorf("%w: %s: MTD type %d is neither NOR nor NAND", ErrUnsupported, d.Path, df.mtd.typ)
			}
			if df.SectorSize == 0 {
				df.SectorSize = int64(df.mtd.erasesize)
			}
			if df.SectorSize <= 0 {
				return nil, fmt.Errorf("%w: %s: unknown erase size", ErrConfig, d.Path)
			}
		}
	}
	if df.Offset < 0 {
		size, err := f.Seek(0, io.SeekEnd) // works for block devices too
		if err != nil {
			return nil, fmt.Errorf("%s: size for negative offset: %w", d.Path, err)
		}
		df.Offset += size
		if df.Offset < 0 {
			return nil, fmt.Errorf("%w: %s: offset before the start of a %d-byte device", ErrConfig, d.Path, size)
		}
	}
	return df, nil
}

func (d *devFile) read() ([]byte, error) {
	f, err := os.Open(d.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img := make([]byte, d.EnvSize)
	if d.kind == kindMTD && d.mtd.typ == mtdNAND {
		err = d.nandRead(f, img)
	} else {
		_, err = f.ReadAt(img, d.Offset)
	}
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: %d bytes at offset %#x run past the end of the device", ErrConfig, d.EnvSize, d.Offset)
	}
	return img, err
}

// write stores one copy. Files and block devices get the data area first
// (synced), then the header of hdr bytes (synced): the copy's CRC only
// matches once both have landed.
func (d *devFile) write(img []byte, hdr int) error {
	restore := d.unprotect()
	defer restore()
	f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if d.kind == kindMTD {
		err = d.mtdWrite(f, img) // MTD writes reach the flash before returning
	} else {
		err = writeSynced(f, img[hdr:], d.Offset+int64(hdr))
		if err == nil {
			err = writeSynced(f, img[:hdr], d.Offset)
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func writeSynced(f *os.File, b []byte, off int64) error {
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	return f.Sync()
}

// writeFlag overwrites the flags byte of a redundant copy in place (NOR
// clears bits without an erase).
func (d *devFile) writeFlag(flag byte) error {
	f, err := os.OpenFile(d.Path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	unlock := d.mtdUnlock(f, d.Offset, d.SectorSize)
	_, err = f.WriteAt([]byte{flag}, d.Offset+crcLen)
	unlock()
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return f.Close()
}

// unprotect clears the read-only switch of an eMMC boot partition
// (/dev/mmcblkNbootM) for the write, as libubootenv does, and returns a
// function that sets it again.
func (d *devFile) unprotect() func() {
	name, ok := emmcBootPart(d.Path)
	if !ok {
		return func() {}
	}
	path := d.sysfs + "/class/block/" + name + "/force_ro"
	cur, err := os.ReadFile(path)
	if err != nil || !bytes.HasPrefix(cur, []byte("1")) {
		return func() {}
	}
	if err := os.WriteFile(path, []byte("0"), 0); err != nil {
		return func() {}
	}
	return func() { _ = os.WriteFile(path, []byte("1"), 0) }
}

// emmcBootPart returns "mmcblkNbootM" for /dev/mmcblkNbootM or
// /dev/block/mmcblkNbootM.
func emmcBootPart(path string) (string, bool) {
	name, ok := strings.CutPrefix(path, "/dev/block/")
	if !ok {
		if name, ok = strings.CutPrefix(path, "/dev/"); !ok {
			return "", false
		}
	}
	rest, ok := strings.CutPrefix(name, "mmcblk")
	if !ok {
		return "", false
	}
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 {
		return "", false
	}
	part, ok := strings.CutPrefix(rest[i:], "boot")
	if !ok || part == "" {
		return "", false
	}
	for _, c := range part {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return name, true
}
