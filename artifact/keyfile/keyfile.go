// Package keyfile reads the private key files artifacts are signed with,
// and signs through sigstore: keys are decoded by sigstore's cryptoutils
// (plain PEM — PKCS#8, SEC1, PKCS#1 — and password-encrypted keys in
// sigstore's format, "ENCRYPTED SIGSTORE PRIVATE KEY", which is also what
// cosign's "ENCRYPTED COSIGN PRIVATE KEY" files hold), and manifests are
// signed by sigstore's signature.SignerVerifier for the key (ECDSA P-256
// with SHA-256, RSA PKCS#1 v1.5 with SHA-256, or Ed25519).
//
// It is for the signing side (the gitfleet CLI, CI jobs). Devices never
// hold private keys: the agent verifies with the artifact package alone,
// and does not import this package, so sigstore stays out of the device
// binary.
package keyfile

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/gitfleet/gitfleet/artifact"
)

// ErrPasswordNeeded is returned for an encrypted key when no password is
// available.
var ErrPasswordNeeded = errors.New("the private key is encrypted: give its password (GITFLEET_KEY_PASSWORD or --key-password-file)")

// Encrypted reports whether pemBytes is a password-encrypted private key.
func Encrypted(pemBytes []byte) bool {
	block, _ := pem.Decode(pemBytes)
	return block != nil && strings.HasPrefix(block.Type, "ENCRYPTED ")
}

// Load reads a PEM private key and returns a Signer that signs through
// sigstore. password is asked only for an encrypted key; it may be nil
// when none is available.
func Load(pemBytes []byte, password func() ([]byte, error)) (*artifact.Signer, error) {
	block, _ := pem.Decode(pemBytes)
	switch {
	case block == nil:
		return nil, fmt.Errorf("%w: not a PEM private key", artifact.ErrUnsupportedKey)
	case strings.Contains(block.Type, "PUBLIC KEY"):
		return nil, fmt.Errorf("%w: this is a public key; signing needs the private key", artifact.ErrUnsupportedKey)
	case block.Headers["Proc-Type"] != "":
		return nil, fmt.Errorf("%w: legacy OpenSSL-encrypted PEM (Proc-Type) is not supported; convert it: openssl pkey -in KEY -out PLAIN, then gitfleet keys encrypt", artifact.ErrUnsupportedKey)
	}
	pf := cryptoutils.SkipPassword
	if Encrypted(pemBytes) {
		if block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, fmt.Errorf("%w: PKCS#8-encrypted keys (openssl's ENCRYPTED PRIVATE KEY) are not supported; decrypt it (openssl pkey -in KEY -out PLAIN) and encrypt it with gitfleet keys encrypt", artifact.ErrUnsupportedKey)
		}
		if password == nil {
			return nil, ErrPasswordNeeded
		}
		pf = func(bool) ([]byte, error) { return password() }
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, pf)
	if err != nil {
		if Encrypted(pemBytes) {
			return nil, fmt.Errorf("%w: cannot decrypt the private key (wrong password?): %v", artifact.ErrUnsupportedKey, err)
		}
		return nil, fmt.Errorf("%w: %v", artifact.ErrUnsupportedKey, err)
	}
	var sv signature.SignerVerifier
	var pub crypto.PublicKey
	switch k := priv.(type) {
	case *ecdsa.PrivateKey:
		sv, err = signature.LoadECDSASignerVerifier(k, crypto.SHA256)
		pub = k.Public()
	case *rsa.PrivateKey:
		sv, err = signature.LoadRSAPKCS1v15SignerVerifier(k, crypto.SHA256)
		pub = k.Public()
	case ed25519.PrivateKey:
		sv, err = signature.LoadED25519SignerVerifier(k)
		pub = k.Public()
	default:
		return nil, fmt.Errorf("%w: private key type %T", artifact.ErrUnsupportedKey, priv)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", artifact.ErrUnsupportedKey, err)
	}
	// NewMessageSigner refuses what mender-artifact cannot verify (an
	// ECDSA curve other than P-256, RSA keys under 2048 bits).
	return artifact.NewMessageSigner(pub, func(manifest []byte) ([]byte, error) {
		return sv.SignMessage(bytes.NewReader(manifest))
	})
}

// Encrypt returns the private key in pemBytes (plain PEM) encrypted with
// password in sigstore's format ("ENCRYPTED SIGSTORE PRIVATE KEY": scrypt
// and secretbox, as cosign's key files).
func Encrypt(pemBytes, password []byte) ([]byte, error) {
	if len(password) == 0 {
		return nil, errors.New("an empty password would not protect the key")
	}
	if Encrypted(pemBytes) {
		return nil, errors.New("the private key is encrypted already")
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, cryptoutils.SkipPassword)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", artifact.ErrUnsupportedKey, err)
	}
	der, err := cryptoutils.MarshalPrivateKeyToEncryptedDER(priv, func(bool) ([]byte, error) { return password, nil })
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: string(cryptoutils.EncryptedSigstorePrivateKeyPEMType), Bytes: der}), nil
}
