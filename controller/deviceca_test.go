package controller_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"
)

// tlsCA is a CA and a client certificate it issued, for TLS.
type tlsCA struct {
	pem    string
	client tls.Certificate
}

func newTLSCA(t *testing.T, cn string, clientNotAfter time.Time) tlsCA {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "SN7"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: clientNotAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tlsCA{pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		client: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// TestDeviceCATLS: the server asks for client certificates only while the
// live commit declares a DeviceCA, verifies a given one against it, and
// serves clients without one as before; a commit changes it for the next
// connection.
func TestDeviceCATLS(t *testing.T) {
	tc := startController(t, nil)
	ca := newTLSCA(t, "Factory", time.Now().Add(time.Hour))
	other := newTLSCA(t, "Elsewhere", time.Now().Add(time.Hour))
	expired := newTLSCA(t, "Factory old", time.Now().Add(-time.Hour))

	// handshake connects with cert (nil: none) and reports whether the
	// server asked for a certificate and whether a request got through.
	handshake := func(cert *tls.Certificate) (asked bool, err error) {
		cfg := &tls.Config{InsecureSkipVerify: true, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked = true
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		}}
		client := &http.Client{Timeout: deadline, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
		resp, err := client.Get(tc.URL + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return asked, err
	}
	commit := func(files map[string]string, msg string) {
		sha := tc.Repo.Commit(files, msg)
		tc.Trigger()
		stop := time.Now().Add(deadline)
		for tc.Live().Commit.SHA != sha {
			if time.Now().After(stop) {
				t.Fatalf("commit %s not live:\n%s", sha, tc.logs)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	if asked, err := handshake(&ca.client); err != nil || asked {
		t.Fatalf("without a DeviceCA: asked %v, err %v; want no request for a certificate", asked, err)
	}
	commit(map[string]string{"pki/factory.yaml": `apiVersion: gitfleet.io/v1
kind: DeviceCA
metadata:
  name: factory
spec:
  identity:
    serial: subject.commonName
  certificate: |
    ` + strings.ReplaceAll(strings.TrimSpace(ca.pem+expired.pem), "\n", "\n    ") + "\n"}, "trust the factory CA")
	for _, c := range []struct {
		name string
		cert *tls.Certificate
		ok   bool
	}{
		{"no certificate", nil, true},
		{"certificate of the DeviceCA", &ca.client, true},
		{"certificate of another CA", &other.client, false},
		{"expired certificate of a DeviceCA", &expired.client, false},
	} {
		asked, err := handshake(c.cert)
		if !asked || (err == nil) != c.ok {
			t.Errorf("%s: asked %v, err %v; want asked, ok %v", c.name, asked, err, c.ok)
		}
	}
	// The management API knows the devices the DeviceCA names.
	if code, body := tc.do(t, http.MethodGet, "/api/management/v1/audit?device=factory-SN7", "", nil); code != http.StatusOK || !strings.Contains(body, "pki/factory.yaml") {
		t.Errorf("audit of a DeviceCA's device: %d %s", code, body)
	}
	if code, _ := tc.do(t, http.MethodGet, "/api/management/v1/audit?device=elsewhere-SN7", "", nil); code != http.StatusNotFound {
		t.Errorf("audit of a device no DeviceCA names: %d, want 404", code)
	}
	commit(map[string]string{"pki/factory.yaml": ""}, "remove the DeviceCA")
	if asked, err := handshake(&other.client); err != nil || asked {
		t.Fatalf("after the DeviceCA was removed: asked %v, err %v", asked, err)
	}
}
