// Package devcert makes the self-signed TLS certificate `gitfleet serve`
// uses when it is given none. Such a certificate is for development: devices
// must be told to trust it explicitly (Mender's ServerCertificate), so the
// controller logs that it is a development certificate and prints its
// SHA-256 fingerprint for the operator to compare.
//
// The key and certificate are kept in a directory (the controller's data
// directory) and reused across restarts, so devices configured to trust the
// certificate keep working; they are regenerated when they expire within a
// week or no longer cover the requested host names.
package devcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names inside the directory.
const (
	CertFile = "dev-tls.crt"
	KeyFile  = "dev-tls.key"
)

// validity of a new certificate.
const validity = 365 * 24 * time.Hour

// Cert is a loaded development certificate.
type Cert struct {
	TLS         tls.Certificate
	CertPath    string // PEM file devices can be given as ServerCertificate
	Fingerprint string // SHA-256 of the DER certificate, hex with colons
	Created     bool   // made now rather than reused
}

// Ensure returns the development certificate in dir for hosts (DNS names or
// IP addresses; "localhost", 127.0.0.1 and ::1 are always included), making
// it when missing, expiring within a week, or not covering hosts.
func Ensure(dir string, hosts []string, now time.Time) (*Cert, error) {
	hosts = append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	if c, err := load(certPath, keyPath); err == nil && usable(c, hosts, now) {
		return c, nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("devcert: %w (delete %s and %s to make a new one)", err, certPath, keyPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devcert: %w", err)
	}
	certPEM, keyPEM, err := generate(hosts, now)
	if err != nil {
		return nil, fmt.Errorf("devcert: %w", err)
	}
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	c, err := load(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("devcert: %w", err)
	}
	c.Created = true
	return c, nil
}

func load(certPath, keyPath string) (*Cert, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &Cert{TLS: pair, CertPath: certPath, Fingerprint: Fingerprint(pair.Certificate[0])}, nil
}

func usable(c *Cert, hosts []string, now time.Time) bool {
	leaf, err := x509.ParseCertificate(c.TLS.Certificate[0])
	if err != nil || now.Add(7*24*time.Hour).After(leaf.NotAfter) {
		return false
	}
	for _, h := range hosts {
		if leaf.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func generate(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "gitfleet development certificate", Organization: []string{"Gitfleet (development only)"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		// Self-signed and used as its own trust anchor by devices.
		IsCA: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(tmpl.IPAddresses, ip.Equal) {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			}
		} else if h != "" && !slices.Contains(tmpl.DNSNames, h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// Fingerprint returns the SHA-256 of a DER certificate as colon-separated
// hex, the form `openssl x509 -noout -fingerprint -sha256` prints.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	parts := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// writeAtomic writes a file so that it is either wholly there or not at all.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("devcert: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("devcert: write %s: %w", path, err)
	}
	return nil
}
