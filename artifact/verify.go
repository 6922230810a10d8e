package artifact

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
)

// Verifier checks manifest signatures. It uses only the standard library's
// crypto/ecdsa, crypto/rsa and crypto/ed25519, so that the device agent,
// which links this package for its Reader, stays small.
type Verifier struct {
	alg Algorithm
	pub crypto.PublicKey
	id  string
}

// LoadVerifier reads a PEM public key (PKIX "PUBLIC KEY" or PKCS#1 "RSA
// PUBLIC KEY").
func LoadVerifier(pemBytes []byte) (*Verifier, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("%w: not a PEM public key", ErrUnsupportedKey)
	}
	if strings.Contains(block.Type, "PRIVATE KEY") {
		return nil, fmt.Errorf("%w: this is a private key; verification takes the public key (derive it with `gitfleet keys public`)", ErrUnsupportedKey)
	}
	var (
		pub crypto.PublicKey
		err error
	)
	switch block.Type {
	case "PUBLIC KEY":
		pub, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: PEM block %q (want \"PUBLIC KEY\" or \"RSA PUBLIC KEY\")", ErrUnsupportedKey, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	return newVerifier(pub)
}

// algorithmOf returns the algorithm of a supported public key: ECDSA P-256,
// RSA of at least minRSABits, or Ed25519.
func algorithmOf(pub crypto.PublicKey) (Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("%w: ECDSA curve %s (only P-256 is supported)", ErrUnsupportedKey, k.Curve.Params().Name)
		}
		return ECDSAP256, nil
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return "", fmt.Errorf("%w: RSA key of %d bits (at least %d; 3072 recommended)", ErrUnsupportedKey, k.N.BitLen(), minRSABits)
		}
		return RSA, nil
	case ed25519.PublicKey:
		return Ed25519, nil
	}
	return "", fmt.Errorf("%w: key type %T (use ECDSA P-256, RSA or Ed25519)", ErrUnsupportedKey, pub)
}

func newVerifier(pub crypto.PublicKey) (*Verifier, error) {
	alg, err := algorithmOf(pub)
	if err != nil {
		return nil, err
	}
	id, err := Fingerprint(pub)
	if err != nil {
		return nil, err
	}
	return &Verifier{alg: alg, pub: pub, id: id}, nil
}

// Algorithm returns the verifier's algorithm.
func (v *Verifier) Algorithm() Algorithm { return v.alg }

// Fingerprint returns the key's fingerprint (see [Fingerprint]).
func (v *Verifier) Fingerprint() string { return v.id }

// Verify checks a manifest.sig content (base64, mender-artifact encoding)
// against manifest.
func (v *Verifier) Verify(manifest, sigB64 []byte) error {
	sig, err := base64.StdEncoding.Strict().DecodeString(strings.TrimRight(string(sigB64), "\n"))
	if err != nil {
		return fmt.Errorf("%w: manifest.sig is not base64: %v", ErrSignature, err)
	}
	digest := sha256.Sum256(manifest)
	ok := false
	switch k := v.pub.(type) {
	case *ecdsa.PublicKey:
		// mender-artifact stores raw r‖s. Only that form is accepted, so
		// one artifact has one valid encoding.
		if len(sig) != p256SigSize {
			return fmt.Errorf("%w: ECDSA P-256 signature is %d bytes, want %d (raw r‖s)", ErrSignature, len(sig), p256SigSize)
		}
		r := new(big.Int).SetBytes(sig[:p256SigSize/2])
		s := new(big.Int).SetBytes(sig[p256SigSize/2:])
		if r.Sign() == 0 || s.Sign() == 0 {
			return fmt.Errorf("%w: zero r or s in ECDSA signature", ErrSignature)
		}
		ok = ecdsa.Verify(k, digest[:], r, s)
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	case ed25519.PublicKey:
		if len(sig) != ed25519.SignatureSize {
			return fmt.Errorf("%w: Ed25519 signature is %d bytes, want %d", ErrSignature, len(sig), ed25519.SignatureSize)
		}
		ok = ed25519.Verify(k, manifest, sig)
	}
	if !ok {
		return fmt.Errorf("%w with %s key %s", ErrSignature, v.alg, v.id[:16])
	}
	return nil
}

// Fingerprint is the lowercase hex SHA-256 of the key's PKIX DER encoding:
// the same value `openssl pkey -pubin -outform DER | sha256sum` prints.
func Fingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}
