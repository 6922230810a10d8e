//go:build linux

package bootenv

import (
	"fmt"
	"slices"
	"testing"
)

func TestMTDBlocks(t *testing.T) {
	tests := []struct {
		name  string
		dev   Device
		nand  bool
		bad   []int64
		want  []string // "start:lo-hi"
		fails bool
	}{
		{
			name: "env smaller than a sector",
			dev:  Device{Offset: 0x20000, EnvSize: 0x4000, SectorSize: 0x10000},
			want: []string{"0x20000:0-16384"},
		},
		{
			name: "env over three sectors",
			dev:  Device{Offset: 0, EnvSize: 0x2800, SectorSize: 0x1000},
			want: []string{"0x0:0-4096", "0x1000:4096-8192", "0x2000:8192-10240"},
		},
		{
			name: "nand skips a bad block",
			dev:  Device{Offset: 0x40000, EnvSize: 0x20000, SectorSize: 0x20000, Sectors: 3},
			nand: true,
			bad:  []int64{0x40000},
			want: []string{"0x60000:0-131072"},
		},
		{
			name:  "nand runs out of spare blocks",
			dev:   Device{Offset: 0, EnvSize: 0x20000, SectorSize: 0x20000, Sectors: 2},
			nand:  true,
			bad:   []int64{0, 0x20000},
			fails: true,
		},
		{
			name:  "nand without spare blocks",
			dev:   Device{Offset: 0, EnvSize: 0x20000, SectorSize: 0x20000},
			nand:  true,
			bad:   []int64{0},
			fails: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &devFile{Device: tc.dev, kind: kindMTD, mtd: mtdInfo{typ: mtdNOR}}
			if tc.nand {
				d.mtd.typ = mtdNAND
				d.badBlock = func(off int64) (bool, error) { return slices.Contains(tc.bad, off), nil }
			}
			var got []string
			err := d.blocks(nil, func(start int64, lo, hi int) error {
				got = append(got, fmt.Sprintf("%#x:%d-%d", start, lo, hi))
				return nil
			})
			if (err != nil) != tc.fails {
				t.Fatalf("err = %v, want failure %v", err, tc.fails)
			}
			if !tc.fails && !slices.Equal(got, tc.want) {
				t.Errorf("blocks %q, want %q", got, tc.want)
			}
		})
	}
}
