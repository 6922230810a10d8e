package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"sync/atomic"
	"time"
)

// clientPKI is the mtls mode's test CA and the client certificates it
// issued (ECDSA P-256, as a factory CA would issue to devices), one per
// polling client.
type clientPKI struct {
	caFile string // PEM, for the ceiling server's ClientCAs
	caPEM  []byte // the same, declared as a DeviceCA in the fleet repository
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	certs  []tls.Certificate
	next   atomic.Uint64
	asked  atomic.Int64 // handshakes in which the server asked for a certificate
	// always: every device connection presents a certificate, in every
	// mode (-device-ca: the devices are admitted by their certificates,
	// and a device presents its certificate on each TLS connection),
	// not only in the mtls mode.
	always bool
}

// newClientPKI writes a CA certificate to dir/client-ca.pem and issues n
// client certificates under it.
func newClientPKI(dir string, n int) (*clientPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "gitfleet-loadgen device CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p := &clientPKI{caFile: dir + "/client-ca.pem", caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), ca: ca, caKey: caKey}
	if err := os.WriteFile(p.caFile, p.caPEM, 0o644); err != nil {
		return nil, err
	}
	for i := range n {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(1000 + i)), Subject: pkix.Name{CommonName: fmt.Sprintf("loadgen-client-%03d", i), SerialNumber: fmt.Sprintf("SN%06d", i)},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		p.certs = append(p.certs, tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key})
	}
	return p, nil
}

// deviceCert issues device i's certificate, as a factory CA would: for
// its Ed25519 key (fleet.key), with its name as subject serial number and
// certificate serial fleet.certSerial(i), for client authentication.
func (p *clientPKI) deviceCert(f *fleet, i int) (tls.Certificate, error) {
	now := time.Now()
	key := f.key(i)
	tmpl := &x509.Certificate{
		SerialNumber: f.certSerial(i), Subject: pkix.Name{CommonName: f.name(i), SerialNumber: f.name(i)},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, key.Public(), p.caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("device certificate of %s: %w", f.name(i), err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, p.ca.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// caName is the DeviceCA's name, and caIdentityAttr the identity attribute
// it reads from a certificate's subject serial number; the device it
// admits is called "<caName>-<subject serial number>".
const (
	caName         = "loadgen"
	caIdentityAttr = "serial"
)

// deviceCAYAML declares the CA as a DeviceCA (devices named by their
// certificate's subject serial number), so that gitfleet serve asks for
// client certificates and verifies them at each handshake as it would a
// factory CA's.
const deviceCAYAML = `apiVersion: gitfleet.io/v1
kind: DeviceCA
metadata: {name: ` + caName + `}
spec:
  certificateFile: fleet/loadgen-ca.pem
  identity: {` + caIdentityAttr + `: subject.serialNumber}
  deviceType: sim
`

// deviceTLS is the TLS configuration of a device's connections to a
// server whose certificate pool verifies: with pki.always (-device-ca),
// it presents a client certificate of the test CA when the server asks.
func deviceTLS(pool *x509.CertPool, pki *clientPKI) *tls.Config {
	cfg := &tls.Config{RootCAs: pool}
	if pki != nil && pki.always {
		cfg.GetClientCertificate = pki.getClientCertificate
	}
	return cfg
}

// getClientCertificate hands out the certificates in turn, and counts the
// handshakes in which the server asked for one (a server that does not
// ask gets none: the handshake is then plain TLS).
func (p *clientPKI) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	p.asked.Add(1)
	return &p.certs[p.next.Add(1)%uint64(len(p.certs))], nil
}
