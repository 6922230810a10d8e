package deviceapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/gitfleet/gitfleet/artifact"
)

// ErrSignature is returned (wrapped) when X-MEN-Signature does not verify.
var ErrSignature = errors.New("deviceapi: bad request signature")

// parseDeviceKey reads a device's PEM public key (PKIX "PUBLIC KEY") and
// returns it with its fingerprint: the hex SHA-256 of its DER, as
// `gitfleet keys fingerprint` prints it. Accepted: RSA of 2048…8192 bits,
// ECDSA P-256, Ed25519.
func parseDeviceKey(p string) (crypto.PublicKey, string, error) {
	block, rest := pem.Decode([]byte(p))
	if block == nil || block.Type != "PUBLIC KEY" || strings.TrimSpace(string(rest)) != "" {
		return nil, "", badRequest("pubkey is not one PEM \"PUBLIC KEY\" block")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, "", badRequest("pubkey: %v", err)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return nil, "", badRequest("RSA pubkey of %d bits (want 2048…8192)", n)
		}
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, "", badRequest("ECDSA pubkey on %s (want P-256)", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return nil, "", badRequest("pubkey type %T (want RSA, ECDSA P-256 or Ed25519)", pub)
	}
	fp, err := artifact.Fingerprint(pub)
	if err != nil {
		return nil, "", badRequest("pubkey: %v", err)
	}
	return pub, fp, nil
}

// verifySignature checks the base64 X-MEN-Signature header over body:
// RSA PKCS#1 v1.5 with SHA-256, ECDSA P-256 with SHA-256 (ASN.1 DER, or
// raw r‖s as some clients write it), or Ed25519 over the body itself
// (or over its SHA-256).
func verifySignature(pub crypto.PublicKey, body []byte, header string) error {
	header = strings.TrimSpace(header)
	if header == "" {
		return fmt.Errorf("%w: no X-MEN-Signature header", ErrSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		if sig, err = base64.RawStdEncoding.DecodeString(header); err != nil {
			return fmt.Errorf("%w: X-MEN-Signature is not base64", ErrSignature)
		}
	}
	digest := sha256.Sum256(body)
	ok := false
	switch k := pub.(type) {
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(k, digest[:], sig)
		if !ok && len(sig) == 64 {
			r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
			ok = ecdsa.Verify(k, digest[:], r, s)
		}
	case ed25519.PublicKey:
		// Pure Ed25519 over the body, as DESIGN.md §5 specifies; a
		// signature over the body's SHA-256 is taken too (it proves
		// possession of the key just as well), since clients differ.
		ok = ed25519.Verify(k, body, sig) || ed25519.Verify(k, digest[:], sig)
	}
	if !ok {
		return ErrSignature
	}
	return nil
}

// DeviceID derives a device's ID from its identity: the first 16 bytes of
// the SHA-256 of the canonical identity JSON (sorted keys, flattened
// values), in hex. The same identity always gives the same ID, on every
// replica, before and after the device is accepted, so rollout phase
// membership (a hash of rollout and device ID) never moves.
func DeviceID(identity Attributes) string {
	sum := sha256.Sum256(identity.Canonical())
	return fmt.Sprintf("%x", sum[:16])
}
