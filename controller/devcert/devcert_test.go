package devcert

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEnsureReusesAndRenews(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	c1, err := Ensure(dir, []string{"controller.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !c1.Created {
		t.Fatal("first call did not create a certificate")
	}
	if st, err := os.Stat(filepath.Join(dir, KeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	c2, err := Ensure(dir, []string{"controller.example"}, now.Add(24*time.Hour))
	if err != nil || c2.Created || c2.Fingerprint != c1.Fingerprint {
		t.Fatalf("second call made a new certificate: %+v %v", c2, err)
	}
	c3, err := Ensure(dir, []string{"other.example"}, now)
	if err != nil || !c3.Created {
		t.Fatalf("a new host name did not renew: %v", err)
	}
	c4, err := Ensure(dir, []string{"other.example"}, now.Add(360*24*time.Hour))
	if err != nil || !c4.Created {
		t.Fatalf("a certificate expiring within a week was reused: %v", err)
	}
}

func TestEnsureRefusesCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, CertFile), []byte("junk"), 0o644)
	os.WriteFile(filepath.Join(dir, KeyFile), []byte("junk"), 0o600)
	if _, err := Ensure(dir, nil, time.Now()); err == nil || !strings.Contains(err.Error(), "delete") {
		t.Fatalf("corrupt files: %v", err)
	}
}

// TestServesTLS checks a client that trusts only the certificate file
// connects, and that the fingerprint is the one openssl prints.
func TestServesTLS(t *testing.T) {
	c, err := Ensure(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{c.TLS}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	pool := x509.NewCertPool()
	pemBytes, _ := os.ReadFile(c.CertPath)
	pool.AppendCertsFromPEM(pemBytes)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, host := range []string{"127.0.0.1", "localhost"} {
		resp, err := client.Get("https://" + net.JoinHostPort(host, port) + "/")
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		resp.Body.Close()
	}
	if openssl, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command(openssl, "x509", "-noout", "-fingerprint", "-sha256", "-in", c.CertPath).Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), c.Fingerprint) {
			t.Fatalf("openssl says %s, we say %s", out, c.Fingerprint)
		}
	}
}
