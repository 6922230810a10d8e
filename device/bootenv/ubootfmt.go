package bootenv

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// The U-Boot environment image, as U-Boot's env/common.c and libubootenv's
// uboot_env.c lay it out. One copy of size envSize:
//
//	single:    crc32 (4 bytes, little-endian) | data
//	redundant: crc32 (4 bytes, little-endian) | flags (1 byte) | data
//
// crc32 is the IEEE CRC of the whole data area, padding included. The data
// area holds "name=value" records, each ended by NUL, then one more NUL; the
// rest is padding (libubootenv pads with NUL bytes; any padding is fine since
// the CRC covers it). The flags byte is not covered by the CRC.

const (
	crcLen = 4
	// minEnvSize leaves room for the header and an empty list (two NULs).
	minEnvSize = crcLen + 1 + 2
	// maxEnvSize bounds what is read into memory; real environments are
	// 8–256 KiB.
	maxEnvSize = 16 << 20
)

// flagScheme is how the flags bytes of a redundant pair pick the current copy.
type flagScheme int

const (
	// flagsCounter: the flags byte is a serial number, incremented on every
	// write and wrapping 255 → 0. libubootenv uses it for files, block
	// devices, NAND and UBI; U-Boot itself for everything but NOR flash.
	flagsCounter flagScheme = iota
	// flagsBoolean: NOR flash. The new copy is written with flags 1 (active)
	// and the old one is then marked 0 (obsolete) by clearing bits in place,
	// which NOR allows without an erase.
	flagsBoolean
)

const (
	flagActive   = 1
	flagObsolete = 0
	flagErased   = 0xFF
)

func headerLen(redundant bool) int {
	if redundant {
		return crcLen + 1
	}
	return crcLen
}

// copyState is what one stored copy says about itself.
type copyState struct {
	ok    bool // stored CRC matches the data area
	flags byte // redundant only
}

// checkCopy verifies one copy. img is exactly one envSize long.
func checkCopy(img []byte, redundant bool) copyState {
	h := headerLen(redundant)
	if len(img) < h {
		return copyState{}
	}
	st := copyState{ok: binary.LittleEndian.Uint32(img) == crc32.ChecksumIEEE(img[h:])}
	if redundant {
		st.flags = img[crcLen]
	}
	return st
}

// pickCopy returns which of two copies is current and whether it is valid.
// This is libubootenv's rule (uboot_env.c, libuboot_load), which agrees with
// U-Boot's env_import_redund for the counter scheme:
//
//   - only one copy has a good CRC: that one;
//   - neither: invalid (current 0, whose flags the next write increments);
//   - both: the one with the larger flags, copy 0 on a tie; then, counter
//     scheme, 255 and 0 mean the counter wrapped, so the copy holding 0 wins;
//     boolean scheme, a copy whose flags read 0xFF (erased) wins.
func pickCopy(c [2]copyState, scheme flagScheme) (current int, valid bool) {
	switch {
	case c[0].ok && !c[1].ok:
		return 0, true
	case !c[0].ok && c[1].ok:
		return 1, true
	case !c[0].ok && !c[1].ok:
		return 0, false
	}
	f0, f1 := c[0].flags, c[1].flags
	if f1 > f0 {
		current = 1
	}
	switch scheme {
	case flagsCounter:
		if f0 == 0xFF && f1 == 0 {
			current = 1
		} else if f1 == 0xFF && f0 == 0 {
			current = 0
		}
	case flagsBoolean:
		if f1 == flagErased {
			current = 1
		} else if f0 == flagErased {
			current = 0
		}
	}
	return current, true
}

// nextFlags is the flags byte of the copy that replaces one whose flags are cur.
func nextFlags(cur byte, scheme flagScheme) byte {
	if scheme == flagsBoolean {
		return flagActive
	}
	return cur + 1 // wraps 255 → 0, which pickCopy reads as newer
}

// parseData reads the variables of a data area, as libubootenv does: records
// up to the first empty one; a record without '=' or with an empty name is
// skipped; a later record wins over an earlier one of the same name. A record
// that runs off the end of the area is corrupt.
func parseData(data []byte) (map[string]string, error) {
	vars := make(map[string]string)
	for i := 0; i < len(data); {
		if data[i] == 0 {
			return vars, nil
		}
		end := i
		for end < len(data) && data[end] != 0 {
			end++
		}
		if end == len(data) {
			return nil, fmt.Errorf("%w: record at byte %d is not terminated", ErrCorrupt, i)
		}
		rec := data[i:end]
		for j, b := range rec {
			if b == '=' {
				if j > 0 {
					vars[string(rec[:j])] = string(rec[j+1:])
				}
				break
			}
		}
		i = end + 1
	}
	// The area ended right after a record, with no empty record: libubootenv
	// would read past the end; U-Boot stops at the end. Accept it.
	return vars, nil
}

// encodeData lays vars out in a data area of n bytes, sorted by name as
// libubootenv stores them, padded with NUL.
func encodeData(vars map[string]string, n int) ([]byte, error) {
	data := make([]byte, 0, n)
	for _, name := range sortedNames(vars) {
		data = append(data, name...)
		data = append(data, '=')
		data = append(data, vars[name]...)
		data = append(data, 0)
	}
	data = append(data, 0)
	if len(data) > n {
		return nil, fmt.Errorf("%w: %d bytes of variables, room for %d", ErrTooLarge, len(data), n)
	}
	return data[:n], nil // make() zeroed the padding
}

// encodeCopy returns one complete copy of envSize bytes.
func encodeCopy(vars map[string]string, envSize int, redundant bool, flags byte) ([]byte, error) {
	h := headerLen(redundant)
	data, err := encodeData(vars, envSize-h)
	if err != nil {
		return nil, err
	}
	img := make([]byte, envSize)
	copy(img[h:], data)
	binary.LittleEndian.PutUint32(img, crc32.ChecksumIEEE(data))
	if redundant {
		img[crcLen] = flags
	}
	return img, nil
}
