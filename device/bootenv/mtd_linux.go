//go:build linux

package bootenv

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MTD flash, written the way libubootenv's uboot_mtd.c does: each erase
// block the copy spans is erased (MEMERASE) and then written; on NAND a bad
// block (MEMGETBADBLOCK) is skipped, up to Device.Sectors-1 of them.
// Written against the kernel's mtd-abi; not yet run on real flash.

const (
	mtdNOR  = unix.MTD_NORFLASH
	mtdNAND = unix.MTD_NANDFLASH
)

type mtdInfo struct {
	typ       uint8
	erasesize uint32
}

func ioctl(f *os.File, req uint, arg unsafe.Pointer) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(arg))
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

func mtdGetInfo(f *os.File) (mtdInfo, error) {
	var info unix.MtdInfo
	if _, err := ioctl(f, unix.MEMGETINFO, unsafe.Pointer(&info)); err != nil {
		return mtdInfo{}, fmt.Errorf("MEMGETINFO: %w", err)
	}
	return mtdInfo{typ: info.Type, erasesize: info.Erasesize}, nil
}

func (d *devFile) isBad(f *os.File, off int64) (bool, error) {
	if d.mtd.typ != mtdNAND {
		return false, nil
	}
	if d.badBlock != nil {
		return d.badBlock(off)
	}
	r, err := ioctl(f, unix.MEMGETBADBLOCK, unsafe.Pointer(&off))
	if err != nil {
		return false, fmt.Errorf("MEMGETBADBLOCK at %#x: %w", off, err)
	}
	return r > 0, nil
}

// blocks calls fn for each good erase block the copy spans, with the block's
// offset on the device and the part of the copy it holds.
func (d *devFile) blocks(f *os.File, fn func(start int64, lo, hi int) error) error {
	sectors := max(d.Sectors, 1)
	start := d.Offset
	done := 0
	for done < int(d.EnvSize) {
		bad, err := d.isBad(f, start)
		if err != nil {
			return err
		}
		if bad {
			start += d.SectorSize
			if sectors--; sectors > 0 {
				continue
			}
			return fmt.Errorf("too many bad blocks from %#x", d.Offset)
		}
		n := min(int(d.EnvSize)-done, int(d.SectorSize))
		if err := fn(start, done, done+n); err != nil {
			return err
		}
		start += d.SectorSize
		done += n
	}
	return nil
}

func (d *devFile) nandRead(f *os.File, img []byte) error {
	return d.blocks(f, func(start int64, lo, hi int) error {
		_, err := f.ReadAt(img[lo:hi], start)
		return err
	})
}

func (d *devFile) mtdWrite(f *os.File, img []byte) error {
	return d.blocks(f, func(start int64, lo, hi int) error {
		unlock := d.mtdUnlock(f, start, d.SectorSize)
		defer unlock()
		ei := unix.EraseInfo{Start: uint32(start), Length: uint32(d.SectorSize)}
		if _, err := ioctl(f, unix.MEMERASE, unsafe.Pointer(&ei)); err != nil {
			return fmt.Errorf("MEMERASE at %#x: %w", start, err)
		}
		_, err := f.WriteAt(img[lo:hi], start)
		return err
	})
}

// mtdUnlock unlocks an MTD range for writing, unless the config says not to
// or the storage is not MTD, and returns what locks it again. Failures are
// ignored, as libubootenv ignores them: many chips have no locking.
func (d *devFile) mtdUnlock(f *os.File, start, length int64) func() {
	if d.kind != kindMTD || d.NoMTDLock {
		return func() {}
	}
	ei := unix.EraseInfo{Start: uint32(start), Length: uint32(length)}
	_, _ = ioctl(f, unix.MEMUNLOCK, unsafe.Pointer(&ei))
	return func() { _, _ = ioctl(f, unix.MEMLOCK, unsafe.Pointer(&ei)) }
}
