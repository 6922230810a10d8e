package bootenv

import (
	"bytes"
	"maps"
	"testing"
)

// FuzzUBootParse feeds arbitrary bytes to the U-Boot environment reader as a
// single copy and as a redundant pair: it must not panic, and whatever it
// reads must survive being written back and read again.
//
//	go test ./device/bootenv -run '^$' -fuzz FuzzUBootParse -fuzztime 1m
func FuzzUBootParse(f *testing.F) {
	for _, vars := range []map[string]string{
		{},
		{"bootcmd": "run mender_setup", "mender_boot_part": "2"},
		{"a": "x=y", "multi": "l1\nl2"},
	} {
		img, _ := encodeCopy(vars, 64, false, 0)
		f.Add(img)
		red, _ := encodeCopy(vars, 64, true, 3)
		f.Add(append(red, red...))
	}
	f.Add([]byte("\x00\x00\x00\x00a=1\x00b"))
	f.Add(bytes.Repeat([]byte{0xFF}, 32))

	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) > 1<<16 {
			return
		}
		for _, redundant := range []bool{false, true} {
			h := headerLen(redundant)
			if len(img) < h {
				continue
			}
			st := checkCopy(img, redundant)
			vars, err := parseData(img[h:])
			if err != nil {
				continue
			}
			for k := range vars {
				if k == "" || bytes.ContainsAny([]byte(k), "=\x00") {
					t.Fatalf("parsed an impossible name %q", k)
				}
			}
			out, err := encodeCopy(vars, len(img), redundant, st.flags+1)
			if err != nil {
				continue // a full area without its final NUL does not fit again
			}
			if !checkCopy(out, redundant).ok {
				t.Fatal("written copy fails its own CRC")
			}
			back, err := parseData(out[h:])
			if err != nil || !maps.Equal(back, vars) {
				t.Fatalf("round trip: %q, %v; want %q", back, err, vars)
			}
		}
		if len(img) >= 2*minEnvSize && len(img)%2 == 0 {
			n := len(img) / 2
			c := [2]copyState{checkCopy(img[:n], true), checkCopy(img[n:], true)}
			for _, scheme := range []flagScheme{flagsCounter, flagsBoolean} {
				cur, valid := pickCopy(c, scheme)
				if valid && !c[cur].ok {
					t.Fatalf("picked copy %d with a bad CRC", cur)
				}
				if valid != (c[0].ok || c[1].ok) {
					t.Fatalf("valid=%v with copies %+v", valid, c)
				}
			}
		}
	})
}

// FuzzGRUBBlock runs the GRUB block reader and editor over arbitrary blocks:
// no panics, and an edit never changes the block's size.
func FuzzGRUBBlock(f *testing.F) {
	f.Add(block(1024, "a=1\n", "b=x\\\\y\n"), "a", "new")
	f.Add([]byte(grubSignature+"a=1\nb"), "b", "")
	f.Add([]byte(grubSignature+"\\"), "x", "y\n")
	f.Fuzz(func(t *testing.T, blk []byte, name, value string) {
		if len(blk) > 1<<14 || !bytes.HasPrefix(blk, []byte(grubSignature)) || checkName(name) != nil || name[0] == '#' {
			return
		}
		grubIterate(blk, func(string, string) {})
		edited := bytes.Clone(blk)
		err := grubApply(edited, name, value)
		if len(edited) != len(blk) {
			t.Fatalf("size changed from %d to %d", len(blk), len(edited))
		}
		if err != nil {
			return
		}
		got := map[string]string{}
		grubIterate(edited, func(k, v string) { got[k] = v })
		// In a well-formed block the edit is what a reader sees.
		wellFormed := true
		for p := len(grubSignature); p < len(blk); p = grubNextLine(blk, p) {
			if blk[p] == '#' {
				continue
			}
			eq, nl := bytes.IndexByte(blk[p:], '='), bytes.IndexByte(blk[p:], '\n')
			if eq < 0 || (nl >= 0 && nl < eq) || grubValueEnd(blk, p+eq+1) < 0 {
				wellFormed = false
				break
			}
		}
		if !wellFormed {
			return
		}
		if v, ok := got[name]; value == "" && ok || value != "" && v != value {
			t.Fatalf("after setting %q=%q the block reads %q", name, value, got)
		}
	})
}
