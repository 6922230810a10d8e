package artifact

import (
	"bytes"
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
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"strings"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
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
	signer signature.Signer
	pub    crypto.PublicKey
}

// Verifier checks manifest signatures.
type Verifier struct {
	alg      Algorithm
	verifier signature.Verifier
	pub      crypto.PublicKey
	id       string
}

// LoadSigner reads a PEM private key: PKCS#8, SEC1 or PKCS#1; RSA (at least
// 2048 bits), ECDSA P-256 or Ed25519. Encrypted keys are refused.
func LoadSigner(pemBytes []byte) (*Signer, error) {
	if block, _ := pem.Decode(pemBytes); block == nil {
		return nil, fmt.Errorf("%w: not a PEM private key", ErrUnsupportedKey)
	} else if strings.Contains(block.Type, "PUBLIC KEY") {
		return nil, fmt.Errorf("%w: this is a public key; signing needs the private key", ErrUnsupportedKey)
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(pemBytes, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: private key type %T", ErrUnsupportedKey, priv)
	}
	alg, err := algorithmOf(signer.Public())
	if err != nil {
		return nil, err
	}
	s, err := signature.LoadSigner(priv, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	return &Signer{alg: alg, signer: s, pub: signer.Public()}, nil
}

// Algorithm returns the signer's algorithm.
func (s *Signer) Algorithm() Algorithm { return s.alg }

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
	sig, err := s.signer.SignMessage(bytes.NewReader(manifest))
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
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
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
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedKey, err)
	}
	id, err := Fingerprint(pub)
	if err != nil {
		return nil, err
	}
	return &Verifier{alg: alg, verifier: v, pub: pub, id: id}, nil
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
	switch v.alg {
	case ECDSAP256:
		// mender-artifact stores raw r‖s; sigstore verifies ASN.1. Only the
		// raw form is accepted, so one artifact has one valid encoding.
		if len(sig) != p256SigSize {
			return fmt.Errorf("%w: ECDSA P-256 signature is %d bytes, want %d (raw r‖s)", ErrSignature, len(sig), p256SigSize)
		}
		if sig, err = rawToASN1(sig); err != nil {
			return fmt.Errorf("%w: %v", ErrSignature, err)
		}
	case Ed25519:
		if len(sig) != ed25519.SignatureSize {
			return fmt.Errorf("%w: Ed25519 signature is %d bytes, want %d", ErrSignature, len(sig), ed25519.SignatureSize)
		}
	}
	if err := v.verifier.VerifySignature(bytes.NewReader(sig), bytes.NewReader(manifest)); err != nil {
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

func rawToASN1(raw []byte) ([]byte, error) {
	r := new(big.Int).SetBytes(raw[:len(raw)/2])
	s := new(big.Int).SetBytes(raw[len(raw)/2:])
	if r.Sign() == 0 || s.Sign() == 0 {
		return nil, fmt.Errorf("zero r or s in ECDSA signature")
	}
	return asn1.Marshal(ecdsaSig{r, s})
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
	pubPEM, err = cryptoutils.MarshalPublicKeyToPEM(priv.Public())
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
	return cryptoutils.MarshalPublicKeyToPEM(s.pub)
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
