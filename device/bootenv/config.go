package bootenv

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Device is one copy of a U-Boot environment: one line of fw_env.config.
type Device struct {
	// Path is the file, block device or MTD character device holding the copy.
	Path string
	// Offset of the copy in Path, in bytes. Negative counts back from the end
	// of the device.
	Offset int64
	// EnvSize is the size of the copy, header included (U-Boot's
	// CONFIG_ENV_SIZE). Both copies of a redundant pair have the same size.
	EnvSize int64
	// SectorSize is the erase block size (MTD only; 0 asks the device). A
	// write erases every erase block the copy spans, whole: nothing else,
	// not even the other copy, may share them.
	SectorSize int64
	// Sectors is how many erase blocks the copy may span on NAND, bad blocks
	// skipped (0 means 1).
	Sectors int64
	// NoMTDLock: do not unlock/lock MTD sectors around a write (the sixth
	// column of libubootenv's config).
	NoMTDLock bool
}

// maxConfigSize bounds an fw_env.config read.
const maxConfigSize = 64 << 10

// ParseConfig reads the fw_env.config format libubootenv's fw_printenv and
// fw_setenv read:
//
//	# device           offset   env size  [sector size  [sectors]]
//	/dev/mmcblk0       0x400000 0x4000
//	/dev/mmcblk0       0x800000 0x4000
//
// Lines starting with '#' and lines with fewer than three fields are
// skipped. The offset is a C integer (decimal, 0x hex or 0 octal, may be
// negative); sizes and the sector count are hexadecimal with or without 0x,
// as libubootenv reads them with sscanf "%zx" — so "4000" is 16 KiB. One
// device is a single environment, two are a redundant pair; further lines are
// ignored. The YAML format of newer libubootenv is not read.
func ParseConfig(r io.Reader) ([]Device, error) {
	var devs []Device
	sc := bufio.NewScanner(io.LimitReader(r, maxConfigSize))
	lineNo := 0
	for sc.Scan() && len(devs) < 2 {
		lineNo++
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		d, n, err := parseConfigLine(strings.Fields(line))
		if n < 3 {
			continue // what sscanf does with a short line
		}
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrConfig, lineNo, err)
		}
		devs = append(devs, d)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if err := checkDevices(devs); err != nil {
		return nil, err
	}
	return devs, nil
}

// parseConfigLine converts fields in order, stopping at the first that does
// not parse, and returns how many did (like sscanf's count).
func parseConfigLine(f []string) (d Device, n int, err error) {
	if len(f) < 1 {
		return d, 0, nil
	}
	d.Path, n = f[0], 1
	if len(f) < 2 {
		return d, n, nil
	}
	if d.Offset, err = strconv.ParseInt(f[1], 0, 64); err != nil {
		return d, n, nil
	}
	n++
	hex := func(s string) (int64, bool) {
		s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
		v, err := strconv.ParseInt(s, 16, 64)
		return v, err == nil && v >= 0
	}
	var ok bool
	if len(f) < 3 {
		return d, n, nil
	}
	if d.EnvSize, ok = hex(f[2]); !ok {
		return d, n, nil
	}
	n++
	if d.EnvSize == 0 {
		return d, n, fmt.Errorf("environment size is zero")
	}
	if len(f) > 3 {
		if d.SectorSize, ok = hex(f[3]); !ok {
			return d, n, nil
		}
		n++
	}
	if len(f) > 4 {
		if d.Sectors, ok = hex(f[4]); !ok {
			return d, n, nil
		}
		n++
	}
	if len(f) > 5 {
		v, err := strconv.Atoi(f[5])
		if err != nil {
			return d, n, nil
		}
		d.NoMTDLock = v != 0
		n++
	}
	return d, n, nil
}

func checkDevices(devs []Device) error {
	switch len(devs) {
	case 0:
		return fmt.Errorf("%w: no environment device", ErrConfig)
	case 1, 2:
	default:
		return fmt.Errorf("%w: %d devices, want 1 or 2", ErrConfig, len(devs))
	}
	for i, d := range devs {
		if d.Path == "" {
			return fmt.Errorf("%w: device %d has no path", ErrConfig, i)
		}
		if d.EnvSize < minEnvSize || d.EnvSize > maxEnvSize {
			return fmt.Errorf("%w: %s: environment size %#x outside [%#x, %#x]", ErrConfig, d.Path, d.EnvSize, minEnvSize, maxEnvSize)
		}
		if d.SectorSize < 0 || d.Sectors < 0 {
			return fmt.Errorf("%w: %s: negative sector size or count", ErrConfig, d.Path)
		}
	}
	if len(devs) == 2 && devs[0].EnvSize != devs[1].EnvSize {
		return fmt.Errorf("%w: redundant copies differ in size (%#x, %#x)", ErrConfig, devs[0].EnvSize, devs[1].EnvSize)
	}
	return nil
}
