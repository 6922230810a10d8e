package bootenv

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name   string
		config string
		want   []Device
		err    error
	}{
		{
			name:   "single",
			config: "# comment\n/dev/mmcblk0 0x400000 0x4000\n",
			want:   []Device{{Path: "/dev/mmcblk0", Offset: 0x400000, EnvSize: 0x4000}},
		},
		{
			name:   "redundant, sizes are hex without 0x",
			config: "/dev/mmcblk0\t0x400000\t4000\n/dev/mmcblk0\t0x800000\t4000\n",
			want: []Device{
				{Path: "/dev/mmcblk0", Offset: 0x400000, EnvSize: 0x4000},
				{Path: "/dev/mmcblk0", Offset: 0x800000, EnvSize: 0x4000},
			},
		},
		{
			name:   "offsets decimal, octal, negative",
			config: "/a 4096 0x1000\n/b -16384 0x1000\n",
			want: []Device{
				{Path: "/a", Offset: 4096, EnvSize: 0x1000},
				{Path: "/b", Offset: -16384, EnvSize: 0x1000},
			},
		},
		{
			name:   "octal offset",
			config: "/a 010 0x1000\n",
			want:   []Device{{Path: "/a", Offset: 8, EnvSize: 0x1000}},
		},
		{
			name:   "mtd with sector size, count and no-lock",
			config: "/dev/mtd1 0x0 0x10000 0x20000 2 1\n",
			want:   []Device{{Path: "/dev/mtd1", EnvSize: 0x10000, SectorSize: 0x20000, Sectors: 2, NoMTDLock: true}},
		},
		{
			name:   "short and blank lines skipped, third device ignored",
			config: "\n/dev/x\n/dev/y 0\n/a 0 100\n  # indented comment\n/b 0 100\n/c 0 100\n",
			want: []Device{
				{Path: "/a", EnvSize: 0x100},
				{Path: "/b", EnvSize: 0x100},
			},
		},
		{
			name:   "bad size field makes the line short",
			config: "/a 0 zz\n/b 0 100\n",
			want:   []Device{{Path: "/b", EnvSize: 0x100}},
		},
		{name: "empty", config: "# nothing\n", err: ErrConfig},
		{name: "zero size", config: "/a 0 0\n", err: ErrConfig},
		{name: "too small", config: "/a 0 6\n", err: ErrConfig},
		{name: "too large", config: "/a 0 0x10000000\n", err: ErrConfig},
		{name: "sizes differ", config: "/a 0 0x1000\n/b 0 0x2000\n", err: ErrConfig},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConfig(strings.NewReader(tc.config))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestEmmcBootPart(t *testing.T) {
	tests := map[string]string{
		"/dev/mmcblk0boot0":       "mmcblk0boot0",
		"/dev/mmcblk12boot1":      "mmcblk12boot1",
		"/dev/block/mmcblk1boot0": "mmcblk1boot0",
		"/dev/mmcblk0":            "",
		"/dev/mmcblk0p1":          "",
		"/dev/mmcblkboot0":        "",
		"/dev/mmcblk0boot":        "",
		"/tmp/mmcblk0boot0":       "",
	}
	for path, want := range tests {
		got, ok := emmcBootPart(path)
		if got != want || ok != (want != "") {
			t.Errorf("emmcBootPart(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
}

func TestKindOf(t *testing.T) {
	tests := map[string]storageKind{
		"/dev/mtd3":        kindMTD,
		"/dev/mtd3:env":    kindUBI,
		"/dev/ubi0_1":      kindUBI,
		"/dev/ubi0:uboot":  kindUBI,
		"/dev/mmcblk0":     kindFile,
		"/boot/uboot.env":  kindFile,
		"relative/env.img": kindFile,
	}
	for path, want := range tests {
		if got := kindOf(path); got != want {
			t.Errorf("kindOf(%q) = %v, want %v", path, got, want)
		}
	}
}
