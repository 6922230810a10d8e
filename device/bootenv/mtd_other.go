//go:build !linux

package bootenv

import (
	"fmt"
	"os"
)

const (
	mtdNOR  = 3
	mtdNAND = 4
)

type mtdInfo struct {
	typ       uint8
	erasesize uint32
}

func mtdGetInfo(*os.File) (mtdInfo, error) {
	return mtdInfo{}, fmt.Errorf("%w: MTD flash outside Linux", ErrUnsupported)
}

func (d *devFile) nandRead(*os.File, []byte) error { return ErrUnsupported }

func (d *devFile) mtdWrite(*os.File, []byte) error { return ErrUnsupported }

func (d *devFile) mtdUnlock(*os.File, int64, int64) func() { return func() {} }
