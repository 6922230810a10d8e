package artifact

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"
)

// Algorithm is a signing algorithm.
type Algorithm string

// Algorithms Gitfleet signs and verifies with.
const (
	ECDSAP256 Algorithm = "ecdsa-p256" // mender-artifact compatible
	RSA       Algorithm = "rsa"        // PKCS#1 v1.5, SHA-256; mender-artifact compatible
	Ed25519   Algorithm = "ed25519"    // Gitfleet extension
)

// p256SigSize is the size of a raw r‖s ECDSA P-256 signature.
const p256SigSize = 64

// minRSABits refuses RSA keys too short to be safe.
const minRSABits = 2048

// Signer signs manifests the way mender-artifact does.
type Signer struct {
	alg    Algorithm
	pub    crypto.PublicKey
	signer crypto.Signer
	// message, when set, signs the whole manifest itself (hashing it as
	// the algorithm does) and returns the signature as the algorithm
	// produces it (ASN.1 DER for ECDSA): see NewMessageSigner.
	message func(manifest []byte) ([]byte, error)
}

// NewMessageSigner makes a Signer for the key pub from sign, a function
// that signs a whole manifest — SHA-256 with ECDSA P-256 (ASN.1 DER
// signature) or RSA PKCS#1 v1.5, or pure Ed25519 — such as a sigstore
// signature.Signer's SignMessage. The signature is converted to
// mender-artifact's encoding here.
func NewMessageSigner(pub crypto.PublicKey, sign func(manifest []byte) ([]byte, error)) (*Signer, error) {
	alg, err := algorithmOf(pub)
	if err != nil {
		return nil, err
	}
	return &Signer{alg: alg, pub: pub, message: sign}, nil
}

// LoadSigner reads a PEM private key: PKCS#8, SEC1 or PKCS#1; RSA (at least
// 2048 bits), ECDSA P-256 or Ed25519. Encrypted keys are refused.
func LoadSigner(pemBytes []byte) (*Signer, error) {
	if block, _ := pem.Decode(pemBytes); block == nil {
		return nil, fmt.Errorf("%w: not a PEM private key", ErrUnsupportedKey)
	} else if strings.Contains(block.Type, "PUBLIC KEY") {
		return nil, fmt.Errorf("%w: this is a public key; signing needs the private key", ErrUnsupportedKey)
	}
	priv, err := parsePrivateKey(pemBytes)
	if err != nil {
		return nil, err
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: private key type %T", ErrUnsupportedKey, priv)
	}
	alg, err := algorithmOf(signer.Public())
	if err != nil {
		return nil, err
	}
	return &Signer{alg: alg, pub: signer.Public(), signer: signer}, nil
}

// Algorithm returns the signer's algorithm.
func (s *Signer) Algorithm() Algorithm { return s.alg }

// PublicKeyPEM returns the signer's public key as a PKIX PEM block.
func (s *Signer) PublicKeyPEM() ([]byte, error) { return marshalPublicKey(s.pub) }

// Verifier returns a verifier for the signer's public key.
func (s *Signer) Verifier() *Verifier {
	v, err := newVerifier(s.pub)
	if err != nil {
		panic("artifact: signer with unusable public key: " + err.Error())
	}
	return v
}

// Sign returns the manifest.sig content for manifest: a base64 signature in
// mender-artifact's encoding.
func (s *Signer) Sign(manifest []byte) ([]byte, error) {
	var (
		sig []byte
		err error
	)
	switch {
	case s.message != nil:
		sig, err = s.message(manifest)
	case s.alg == Ed25519:
		sig, err = s.signer.Sign(rand.Reader, manifest, crypto.Hash(0))
	default:
		digest := sha256.Sum256(manifest)
		sig, err = s.signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	}
	if err != nil {
		return nil, fmt.Errorf("sign manifest: %w", err)
	}
	if s.alg == ECDSAP256 {
		if sig, err = asn1ToRaw(sig); err != nil {
			return nil, fmt.Errorf("sign manifest: %w", err)
		}
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sig)))
	base64.StdEncoding.Encode(out, sig)
	return out, nil
}

// parsePrivateKey reads an unencrypted PEM private key: PKCS#8 "PRIVATE
// KEY", SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY".
func parsePrivateKey(pemBytes []byte) (crypto.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	var (
		key any
		err error
	)
	switch {
	case block == nil:
		return nil, fmt.Errorf("%w: not a PEM private key", ErrUnsupportedKey)
	case block.Type == "ENCRYPTED PRIVATE KEY" || strings.HasPrefix(block.Type, "ENCRYPTED ") || block.Headers["Proc-Type"] != "":
		return nil, fmt.Errorf("%w: the private key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)", ErrUnsupportedKey)
	case block.Type == "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case block.Type == "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case block.Type == "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: PEM block %q (want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)", ErrUnsupportedKey, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	return key, nil
}

// marshalPublicKey encodes pub as a PKIX "PUBLIC KEY" PEM block.
func marshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

type ecdsaSig struct{ R, S *big.Int }

func asn1ToRaw(der []byte) ([]byte, error) {
	var s ecdsaSig
	rest, err := asn1.Unmarshal(der, &s)
	if err != nil || len(rest) != 0 || s.R.Sign() <= 0 || s.S.Sign() <= 0 {
		return nil, fmt.Errorf("malformed ASN.1 ECDSA signature")
	}
	raw := make([]byte, p256SigSize)
	s.R.FillBytes(raw[:p256SigSize/2])
	s.S.FillBytes(raw[p256SigSize/2:])
	return raw, nil
}

// GenerateKey makes a new key pair and returns the private and public keys as
// PEM. ECDSA keys are P-256 in SEC1, RSA keys 3072-bit PKCS#1 (both usable by
// mender-artifact too); Ed25519 keys are PKCS#8.
func GenerateKey(alg Algorithm) (privPEM, pubPEM []byte, err error) {
	var (
		priv     crypto.Signer
		privDER  []byte
		pemType  string
		genError error
	)
	switch alg {
	case ECDSAP256:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		priv, pemType = k, "EC PRIVATE KEY"
		privDER, genError = x509.MarshalECPrivateKey(k)
	case RSA:
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			return nil, nil, err
		}
		priv, pemType = k, "RSA PRIVATE KEY"
		privDER = x509.MarshalPKCS1PrivateKey(k)
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		priv, pemType = k, "PRIVATE KEY"
		privDER, genError = x509.MarshalPKCS8PrivateKey(k)
	default:
		return nil, nil, fmt.Errorf("%w: algorithm %q (use ecdsa-p256, rsa or ed25519)", ErrUnsupportedKey, alg)
	}
	if genError != nil {
		return nil, nil, genError
	}
	pubPEM, err = marshalPublicKey(priv.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: privDER}), pubPEM, nil
}

// PublicKeyPEM returns the PEM public key of a PEM private key.
func PublicKeyPEM(privPEM []byte) ([]byte, error) {
	s, err := LoadSigner(privPEM)
	if err != nil {
		return nil, err
	}
	return marshalPublicKey(s.signer.Public())
}

// ParseAlgorithm accepts "ecdsa", "ecdsa-p256", "rsa" and "ed25519".
func ParseAlgorithm(s string) (Algorithm, error) {
	switch strings.ToLower(s) {
	case "ecdsa", "ecdsa-p256", "p256", "ec":
		return ECDSAP256, nil
	case "rsa":
		return RSA, nil
	case "ed25519":
		return Ed25519, nil
	}
	return "", fmt.Errorf("%w: algorithm %q (use ecdsa, rsa or ed25519)", ErrUnsupportedKey, s)
}
