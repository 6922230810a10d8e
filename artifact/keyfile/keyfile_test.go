package keyfile_test

import (
	"crypto/elliptic"
	"errors"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/artifact/keyfile"
)

// Every key type signs through sigstore, and the artifact package's own
// verifier (the one devices run) accepts the signature; a changed manifest
// is refused.
func TestSignVerifiesWithTheDeviceVerifier(t *testing.T) {
	manifest := []byte("0123abcd  data/0000/rootfs.ext4\n")
	for _, alg := range []artifact.Algorithm{artifact.ECDSAP256, artifact.RSA, artifact.Ed25519} {
		priv, pub, err := artifact.GenerateKey(alg)
		if err != nil {
			t.Fatal(err)
		}
		s, err := keyfile.Load(priv, nil)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		if s.Algorithm() != alg {
			t.Errorf("%s: loaded as %s", alg, s.Algorithm())
		}
		sig, err := s.Sign(manifest)
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		v, err := artifact.LoadVerifier(pub)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Verify(manifest, sig); err != nil {
			t.Errorf("%s: the device verifier refuses a sigstore signature: %v", alg, err)
		}
		if err := v.Verify(append([]byte("x"), manifest...), sig); err == nil {
			t.Errorf("%s: a changed manifest verifies", alg)
		}
		gotPub, err := s.PublicKeyPEM()
		if err != nil || string(gotPub) != string(pub) {
			t.Errorf("%s: public key %q, %v; want %q", alg, gotPub, err, pub)
		}
	}
}

// An encrypted key signs with its password only, and cosign-style keys
// (sigstore's encrypted format, made by cryptoutils as cosign makes them)
// load too.
func TestEncryptedKeys(t *testing.T) {
	priv, pub, err := artifact.GenerateKey(artifact.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := keyfile.Encrypt(priv, []byte("correct horse"))
	if err != nil {
		t.Fatal(err)
	}
	if !keyfile.Encrypted(enc) || keyfile.Encrypted(priv) {
		t.Fatal("Encrypted misreads the key files")
	}
	if _, err := keyfile.Load(enc, nil); !errors.Is(err, keyfile.ErrPasswordNeeded) {
		t.Errorf("encrypted key without a password: %v, want ErrPasswordNeeded", err)
	}
	if _, err := keyfile.Load(enc, func() ([]byte, error) { return []byte("wrong"), nil }); err == nil {
		t.Error("encrypted key loaded with a wrong password")
	}
	s, err := keyfile.Load(enc, func() ([]byte, error) { return []byte("correct horse"), nil })
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign([]byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	v, _ := artifact.LoadVerifier(pub)
	if err := v.Verify([]byte("m"), sig); err != nil {
		t.Errorf("signature of the decrypted key: %v", err)
	}
	if _, err := keyfile.Encrypt(enc, []byte("x")); err == nil {
		t.Error("encrypting an encrypted key succeeded")
	}
	if _, err := keyfile.Encrypt(priv, nil); err == nil {
		t.Error("encrypting with an empty password succeeded")
	}

	cosignPriv, cosignPub, err := cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P256(), cryptoutils.StaticPasswordFunc([]byte("pw")))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := keyfile.Load(cosignPriv, func() ([]byte, error) { return []byte("pw"), nil })
	if err != nil {
		t.Fatalf("cosign-style key: %v", err)
	}
	sig, err = cs.Sign([]byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	cv, err := artifact.LoadVerifier(cosignPub)
	if err != nil {
		t.Fatal(err)
	}
	if err := cv.Verify([]byte("m"), sig); err != nil {
		t.Errorf("cosign-style key's signature: %v", err)
	}
}

// Keys mender-artifact cannot verify, and files that are no private key,
// are refused with ErrUnsupportedKey.
func TestRefusedKeys(t *testing.T) {
	_, pub, _ := artifact.GenerateKey(artifact.ECDSAP256)
	p384, _, err := cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P384(), cryptoutils.SkipPassword)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"public key": pub, "not PEM": []byte("hello"), "P-384": p384} {
		if _, err := keyfile.Load(data, nil); !errors.Is(err, artifact.ErrUnsupportedKey) {
			t.Errorf("%s: %v, want ErrUnsupportedKey", name, err)
		}
	}
}
