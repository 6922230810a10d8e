package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
)

// Key is a device's place in a rollout: the first 8 bytes, big endian, of
// SHA-256(rollout ‖ 0x00 ‖ device). It depends on nothing else, so it
// never changes while the rollout keeps its name.
func Key(rollout, device string) uint64 {
	var buf [512]byte
	b := buf[:0]
	if len(rollout)+1+len(device) > len(buf) {
		b = make([]byte, 0, len(rollout)+1+len(device))
	}
	b = append(b, rollout...)
	b = append(b, 0)
	b = append(b, device...)
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// Position is Key as a fraction of 2^64, in [0, 1): the share of an open
// target's devices that come before the device.
func Position(rollout, device string) float64 {
	return math.Ldexp(float64(Key(rollout, device)>>11), -53)
}
