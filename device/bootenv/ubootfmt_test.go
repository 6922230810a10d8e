package bootenv

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"maps"
	"testing"
)

func TestPickCopy(t *testing.T) {
	ok := func(f byte) copyState { return copyState{ok: true, flags: f} }
	bad := func(f byte) copyState { return copyState{ok: false, flags: f} }
	tests := []struct {
		name    string
		c       [2]copyState
		scheme  flagScheme
		current int
		valid   bool
	}{
		{"only first valid", [2]copyState{ok(1), bad(9)}, flagsCounter, 0, true},
		{"only second valid", [2]copyState{bad(9), ok(1)}, flagsCounter, 1, true},
		{"none valid", [2]copyState{bad(3), bad(4)}, flagsCounter, 0, false},
		{"second newer", [2]copyState{ok(4), ok(5)}, flagsCounter, 1, true},
		{"first newer", [2]copyState{ok(6), ok(5)}, flagsCounter, 0, true},
		{"tie goes to first", [2]copyState{ok(7), ok(7)}, flagsCounter, 0, true},
		{"wrapped to second", [2]copyState{ok(255), ok(0)}, flagsCounter, 1, true},
		{"wrapped to first", [2]copyState{ok(0), ok(255)}, flagsCounter, 0, true},
		{"254 and 255", [2]copyState{ok(254), ok(255)}, flagsCounter, 1, true},
		{"1 and 0, no wrap", [2]copyState{ok(1), ok(0)}, flagsCounter, 0, true},
		{"bad newer copy ignored", [2]copyState{ok(4), bad(5)}, flagsCounter, 0, true},
		{"nor active over obsolete", [2]copyState{ok(flagObsolete), ok(flagActive)}, flagsBoolean, 1, true},
		{"nor active first", [2]copyState{ok(flagActive), ok(flagObsolete)}, flagsBoolean, 0, true},
		{"nor erased flag wins", [2]copyState{ok(flagActive), ok(flagErased)}, flagsBoolean, 1, true},
		{"nor erased first", [2]copyState{ok(flagErased), ok(flagActive)}, flagsBoolean, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cur, valid := pickCopy(tc.c, tc.scheme)
			if cur != tc.current || valid != tc.valid {
				t.Errorf("pickCopy = %d, %v; want %d, %v", cur, valid, tc.current, tc.valid)
			}
		})
	}
}

func TestNextFlagsIsPickedNext(t *testing.T) {
	// Whatever the counter, the copy written next must win over the current one.
	for f := 0; f < 256; f++ {
		cur := byte(f)
		next := nextFlags(cur, flagsCounter)
		for _, order := range [][2]copyState{
			{{ok: true, flags: cur}, {ok: true, flags: next}},
			{{ok: true, flags: next}, {ok: true, flags: cur}},
		} {
			got, _ := pickCopy(order, flagsCounter)
			if order[got].flags != next {
				t.Fatalf("flags %d then %d: picked %d", cur, next, order[got].flags)
			}
		}
	}
}

func TestParseData(t *testing.T) {
	tests := []struct {
		name string
		data string
		want map[string]string
		err  error
	}{
		{"empty", "\x00\x00\x00", map[string]string{}, nil},
		{"all zero", "\x00", map[string]string{}, nil},
		{"two", "a=1\x00b=x y\x00\x00\x00", map[string]string{"a": "1", "b": "x y"}, nil},
		{"value with equals", "k=a=b\x00\x00", map[string]string{"k": "a=b"}, nil},
		{"empty value", "k=\x00\x00", map[string]string{"k": ""}, nil},
		{"no equals skipped", "junk\x00a=1\x00\x00", map[string]string{"a": "1"}, nil},
		{"empty name skipped", "=x\x00a=1\x00\x00", map[string]string{"a": "1"}, nil},
		{"later wins", "a=1\x00a=2\x00\x00", map[string]string{"a": "2"}, nil},
		{"stops at empty record", "a=1\x00\x00b=2\x00\x00", map[string]string{"a": "1"}, nil},
		{"newline in value", "a=x\ny\x00\x00", map[string]string{"a": "x\ny"}, nil},
		{"full area", "a=1\x00", map[string]string{"a": "1"}, nil},
		{"unterminated", "a=1\x00b=2", nil, ErrCorrupt},
		{"garbage", "\xff\xff\xff", nil, ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseData([]byte(tc.data))
			if !errors.Is(err, tc.err) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil && !maps.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEncodeData(t *testing.T) {
	vars := map[string]string{"b": "2", "a": "1"}
	got, err := encodeData(vars, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := "a=1\x00b=2\x00\x00\x00"; string(got) != want {
		t.Errorf("got %q, want %q (sorted, NUL padded)", got, want)
	}
	if _, err := encodeData(vars, 9); err != nil {
		t.Errorf("exact fit: %v", err)
	}
	if _, err := encodeData(vars, 8); !errors.Is(err, ErrTooLarge) {
		t.Errorf("one byte short: err = %v, want ErrTooLarge", err)
	}
}

func TestEncodeCopy(t *testing.T) {
	vars := map[string]string{"bootcmd": "run mender_setup", "mender_boot_part": "2"}
	for _, redundant := range []bool{false, true} {
		img, err := encodeCopy(vars, 64, redundant, 7)
		if err != nil {
			t.Fatal(err)
		}
		h := headerLen(redundant)
		if len(img) != 64 {
			t.Fatalf("len = %d", len(img))
		}
		if got, want := binary.LittleEndian.Uint32(img), crc32.ChecksumIEEE(img[h:]); got != want {
			t.Errorf("crc %#x, want %#x", got, want)
		}
		st := checkCopy(img, redundant)
		if !st.ok || (redundant && st.flags != 7) {
			t.Errorf("redundant=%v: checkCopy = %+v", redundant, st)
		}
		got, err := parseData(img[h:])
		if err != nil || !maps.Equal(got, vars) {
			t.Errorf("redundant=%v: round trip %q, %v", redundant, got, err)
		}
		img[h+3] ^= 1
		if checkCopy(img, redundant).ok {
			t.Errorf("redundant=%v: flipped bit not detected", redundant)
		}
	}
}
