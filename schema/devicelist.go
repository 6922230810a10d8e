package schema

import (
	"bytes"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// Device-list files declare many devices compactly, one a line, for fleets
// whose devices come off a production line by the thousand. They are read
// by a line parser, not evaluated with CUE: a Device manifest entry costs
// tens of microseconds of CUE evaluation and kilobytes of syntax tree,
// a line of a device list a few hundred nanoseconds and the Device it
// declares. The rules are those of Device manifests (see checkListDevice).
//
// The format, in a file named *.devices:
//
//	gitfleet.io/v1 devices
//	# name      key (publicKeySHA256, or tofu)  identity attributes  options
//	pump-00001  9f86d081884c7d65…               mac=02:00:00:00:00:01
//	pump-00002  tofu                            serial=SN-2                +deviceType=imx8
//
// The first line that is not blank nor a comment is the header, which
// names the format's version. Then each line is a device: its name, its
// key, and any number of identity attributes (name=value); a field that
// starts with "+" is an option rather than an attribute. The one option
// is +deviceType=TYPE.
const (
	// DeviceListExt is the file name extension of device-list files.
	DeviceListExt = ".devices"
	// DeviceListHeader is the header line of a device-list file.
	DeviceListHeader = APIVersion + " devices"
	// MaxDeviceListSize bounds a device-list file, in bytes (about
	// 250,000 devices a file).
	MaxDeviceListSize = 32 << 20
	// keyTOFU in the key column is trustOnFirstUse: true.
	keyTOFU = "tofu"
)

// loadDeviceList adds the devices of the device-list file to l's fleet,
// reporting every malformed line with its line and column.
func (l *loader) loadDeviceList(file string, data []byte) {
	// The devices' names, keys and identity values are substrings of
	// the file's text, which is never modified once read: converting
	// without a copy saves the file's size again, and a string per
	// field.
	text := unsafe.String(unsafe.SliceData(data), len(data))
	// A byte-order mark, which some editors write, is not part of the
	// header (YAML manifests allow it too).
	text = strings.TrimPrefix(text, "\uFEFF")
	if cap(l.fleet.Devices) == 0 {
		l.fleet.Devices = make([]Device, 0, countDeviceLines(data))
	}
	header := false
	var fields [16]listField
	lineNo := 0
	for len(text) > 0 {
		var line string
		line, text, _ = strings.Cut(text, "\n")
		lineNo++
		line = strings.TrimSuffix(line, "\r")
		if hash := strings.IndexByte(line, '#'); hash >= 0 {
			line = line[:hash]
		}
		fs := splitFields(line, fields[:0])
		if len(fs) == 0 {
			continue
		}
		if !header {
			header = true
			if line = strings.TrimSpace(line); line != DeviceListHeader {
				l.errs.add(Source{File: file, Line: lineNo, Col: fs[0].col}, "",
					"a device-list file starts with the line %q, got %q: add that line first (or rename the file if it is not a device list)", DeviceListHeader, truncate(line, 60))
				return
			}
			continue
		}
		l.listLine(file, lineNo, fs)
	}
	if !header {
		l.errs.add(Source{File: file, Line: 1, Col: 1}, "", "empty device-list file: want the line %q, then one device a line", DeviceListHeader)
	}
}

// countDeviceLines returns the number of device lines of a device-list
// file: the lines with a field, less the header. The loader sizes the
// file's devices by it.
func countDeviceLines(data []byte) int {
	n := 0
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		line = bytes.TrimLeft(line, " \t")
		if len(line) > 0 && line[0] != '#' {
			n++
		}
	}
	return max(n-1, 0)
}

// A listField is a whitespace-separated field of a device-list line and
// its column (in bytes, from 1).
type listField struct {
	s   string
	col int
}

// splitFields appends the fields of line to fs.
func splitFields(line string, fs []listField) []listField {
	i := 0
	for i < len(line) {
		for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
			i++
		}
		start := i
		for i < len(line) && line[i] != ' ' && line[i] != '\t' {
			i++
		}
		if i > start {
			fs = append(fs, listField{line[start:i], start + 1})
		}
	}
	return fs
}

// listLine adds the device of one line, or reports what is wrong with it.
func (l *loader) listLine(file string, lineNo int, fs []listField) {
	at := func(f listField) Source { return Source{File: file, Line: lineNo, Col: f.col} }
	name := fs[0]
	if !validName(name.s) {
		l.errs.add(at(name), "metadata.name", "invalid device name %q: letters, digits, \".\", \"_\" and \"-\", at most 128 characters, starting and ending with a letter or digit", truncate(name.s, 140))
		return
	}
	if len(fs) < 2 {
		l.errs.add(at(name), "spec", "device %q has no key: write its publicKeySHA256 (64 hex digits; `gitfleet devices accept ID` prints it) or tofu after the name", name.s)
		return
	}
	d := Device{Meta: Meta{APIVersion: APIVersion, Kind: KindDevice, Name: name.s, Source: at(name)}}
	key := fs[1]
	switch {
	case key.s == keyTOFU:
		d.Spec.TrustOnFirstUse = true
	case validSHA256(key.s):
		d.Spec.PublicKeySHA256 = key.s
	default:
		l.errs.add(at(key), "spec.publicKeySHA256", "device %q: the key column holds %q; want the key's SHA-256 (64 lowercase hex digits) or tofu", name.s, truncate(key.s, 80))
		return
	}
	ok := true
	for _, f := range fs[2:] {
		attr, value, found := strings.Cut(f.s, "=")
		switch {
		case !found || attr == "" || attr == "+":
			l.errs.add(at(f), "spec.identity", "device %q: %q is not an identity attribute: want name=value (no spaces)", name.s, truncate(f.s, 80))
			ok = false
		case attr[0] == '+':
			if attr != "+deviceType" {
				l.errs.add(at(f), "spec", "device %q: unknown option %s; the only option is +deviceType=TYPE", name.s, truncate(attr, 40))
				ok = false
			} else if value == "" {
				l.errs.add(at(f), "spec.deviceType", "device %q: +deviceType needs a value", name.s)
				ok = false
			} else {
				d.Spec.DeviceType = value
			}
		default:
			if d.Spec.Identity == nil {
				d.Spec.Identity = make(map[string]string, len(fs)-2)
			} else if _, dup := d.Spec.Identity[attr]; dup {
				l.errs.add(at(f), "spec.identity", "device %q: identity attribute %s given twice", name.s, attr)
				ok = false
				continue
			}
			d.Spec.Identity[attr] = value
		}
	}
	if ok && d.Spec.TrustOnFirstUse && d.Spec.Identity == nil {
		l.errs.add(at(key), "spec.trustOnFirstUse", "device %q: tofu binds the first key that authenticates with an identity, and the line has none: add identity attributes (name=value) or write the key's SHA-256", name.s)
		ok = false
	}
	if ok && l.checkDevice(&d) {
		l.fleet.Devices = append(l.fleet.Devices, d)
	}
}

// validName reports whether s is a valid manifest name (#Name).
func validName(s string) bool {
	if len(s) == 0 || len(s) > 128 || !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !alnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// validSHA256 reports whether s is a SHA-256 digest in lowercase hex
// (#SHA256).
func validSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// truncate shortens s for an error message.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
