package schema

// A SigningKey is a public key trusted to sign artifacts.
type SigningKey struct {
	Meta
	Spec SigningKeySpec
}

// The signing algorithms.
const (
	AlgorithmECDSAP256 = "ecdsa-p256"
	AlgorithmRSA       = "rsa"
	AlgorithmEd25519   = "ed25519"
)

// SigningKeySpec is the spec of a [SigningKey]. Exactly one of PublicKey
// and PublicKeyFile is written in the manifest; after [Load], PublicKey
// holds the PEM either way.
type SigningKeySpec struct {
	Algorithm string `json:"algorithm"`

	// PublicKey is the PEM-encoded public key (PKIX "PUBLIC KEY").
	PublicKey string `json:"publicKey,omitempty"`

	// PublicKeyFile is a slash-separated path, relative to the root of the
	// fleet repository, of a PEM file.
	PublicKeyFile string `json:"publicKeyFile,omitempty"`

	// Environment names where the key is trusted ("production",
	// "staging"); empty means everywhere.
	Environment string `json:"environment,omitempty"`
}

// MarshalJSON encodes k in the shape of its manifest.
func (k SigningKey) MarshalJSON() ([]byte, error) { return marshal(&k.Meta, &k.Spec) }
