package agent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gitfleet/gitfleet/device/atomicfile"
)

// LoadOrCreateKey returns the device key at path, creating it on first use:
// ECDSA P-256 in SEC1 PEM ("EC PRIVATE KEY"), mode 0600, written
// atomically. Existing keys may also be PKCS#8 (ECDSA, Ed25519, RSA) or
// PKCS#1 RSA, so a Mender device's key can be reused. It returns the key and
// its public key as PKIX PEM.
func LoadOrCreateKey(path string) (crypto.Signer, []byte, error) {
	b, err := readFileBounded(path, 64<<10)
	if errors.Is(err, fs.ErrNotExist) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("device key: %w", err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, nil, fmt.Errorf("device key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, nil, fmt.Errorf("device key: %w", err)
		}
		if err := atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, nil, fmt.Errorf("device key: %w", err)
		}
		return withPublic(k)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("device key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, nil, fmt.Errorf("device key %s: no PEM block", path)
	}
	var key any
	switch blk.Type {
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		err = fmt.Errorf("unsupported PEM block %q", blk.Type)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("device key %s: %w", path, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("device key %s: not a signing key", path)
	}
	return withPublic(s)
}

func withPublic(s crypto.Signer) (crypto.Signer, []byte, error) {
	der, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("device key: %w", err)
	}
	return s, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}
