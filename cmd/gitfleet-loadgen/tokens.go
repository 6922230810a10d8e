package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gitfleet/gitfleet/controller/deviceapi"
	"github.com/gitfleet/gitfleet/controller/store/redis"
)

// tokenSecret is the store.SharedSecret the device API signs tokens with
// (deviceapi's tokenSecretName). Minted tokens are checked against the
// controller before use, so a change there fails the run at once.
const tokenSecret = "deviceapi.jwt.hs256"

// authClients is how many devices authenticate at once in the sample.
const authClients = 16

type tokens struct {
	all      []string // by device index
	authN    int
	authRate float64       // signed auth requests per second
	authCPU  time.Duration // gitfleet serve's CPU per auth request
}

// prepareTokens authenticates a sample of devices with signed auth
// requests (and checks that probe, a device in flight, is offered the
// artifact, so the artifact is synced), then mints a token for every
// device as the device API issues them, with the key it shares through
// the store, and checks that a minted token carries exactly the claims of
// the token the controller issued to the same device and that the
// controller takes a minted token.
//
// In a DeviceCA fleet (f.ca) each device of the sample authenticates over
// a TLS connection of its own on which it presents its certificate
// (pki.deviceCert: its key, its serial), as a device the DeviceCA admits
// does, and the tokens carry the gf.crt claim the controller then issues.
func prepareTokens(ctx context.Context, redisAddr string, srv *server, pki *clientPKI, f *fleet, probe, sample int) (*tokens, error) {
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: deviceTLS(srv.pool, pki), MaxIdleConnsPerHost: authClients}}
	base := "https://" + srv.addr
	out := &tokens{all: make([]string, f.n)}
	auth := func(i int) (string, error) { return authenticate(ctx, client, base, f, i) }
	if f.ca != "" {
		if pki == nil {
			return nil, fmt.Errorf("a DeviceCA fleet needs the test CA to issue device certificates")
		}
		auth = func(i int) (string, error) {
			cert, err := pki.deviceCert(f, i)
			if err != nil {
				return "", err
			}
			tr := &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: srv.pool, Certificates: []tls.Certificate{cert}}}
			defer tr.CloseIdleConnections()
			return authenticate(ctx, &http.Client{Timeout: 10 * time.Second, Transport: tr}, base, f, i)
		}
	}

	tok, err := auth(probe)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		code, body, err := poll(ctx, client, base, tok)
		if err != nil {
			return nil, err
		}
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("device %s, in flight, is not offered the artifact within a minute (last answer %d %s)", f.name(probe), code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The sample, spread over the fleet.
	if sample = min(sample, f.n); sample > 0 {
		idx := make([]int, sample)
		for j := range idx {
			idx[j] = int(int64(j) * int64(f.n) / int64(sample))
		}
		var next atomic.Int64
		var wg sync.WaitGroup
		var firstErr error
		var once sync.Once
		cpu0 := cpuOf(srv.proc.Process.Pid)
		start := time.Now()
		for range authClients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					j := int(next.Add(1)) - 1
					if j >= len(idx) {
						return
					}
					t, err := auth(idx[j])
					if err != nil {
						once.Do(func() { firstErr = err })
						return
					}
					out.all[idx[j]] = t
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return nil, firstErr
		}
		out.authN, out.authRate = sample, float64(sample)/time.Since(start).Seconds()
		out.authCPU = (cpuOf(srv.proc.Process.Pid) - cpu0) / time.Duration(sample)
		fmt.Printf("%d devices authenticated with signed auth requests: %.0f/s\n", sample, out.authRate)
	}

	// Mint the rest.
	st, err := redis.New(redis.Options{Addrs: strings.Split(redisAddr, ",")})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	key, err := st.SharedSecret(ctx, tokenSecret, func() ([]byte, error) {
		return nil, fmt.Errorf("the controller has not created its token key %q", tokenSecret)
	})
	if err != nil {
		return nil, err
	}
	start := time.Now()
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			now := time.Now()
			for i := w; i < f.n; i += workers {
				if out.all[i] == "" {
					out.all[i] = mint(key, f, i, now)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("%d tokens minted in %s\n", f.n, time.Since(start).Round(time.Millisecond))
	// The probe's token is the controller's own: a token minted for the
	// same device must say the same.
	if err := sameClaims(tok, mint(key, f, probe, time.Now())); err != nil {
		return nil, fmt.Errorf("a minted token is not what the controller issues to device %s: %w; has the device API's token format changed?", f.name(probe), err)
	}
	minted := slices.IndexFunc(out.all, func(t string) bool { return t != "" && t != tok })
	if minted < 0 {
		minted = 0
	}
	minted = (minted + f.n/2) % f.n
	if code, body, err := poll(ctx, client, base, out.all[minted]); err != nil || (code != 200 && code != 204) {
		return nil, fmt.Errorf("the controller refuses a minted token (%d %s, %v): has the device API's token format changed?", code, body, err)
	}
	return out, nil
}

// mint makes the token the device API issues to device i (see
// controller/deviceapi/token.go): HS256 over the claims, with identity and
// key fingerprint as private claims, and in a DeviceCA fleet the
// certificate's "<DeviceCA>/<serial>" (gf.crt) as admitCert returns it.
func mint(key []byte, f *fleet, i int, now time.Time) string {
	id := f.id(i)
	jti := make([]byte, 16)
	rand.Read(jti)
	// The controller's own claims type, so that the payload is laid out
	// as the controller writes it (a payload in another field order, as
	// a map would give, is still accepted, by the slower encoding/json).
	claims, _ := json.Marshal(deviceapi.Claims{
		Subject: id, ID: hex.EncodeToString(jti), IssuedAt: now.Unix(), Expires: now.Add(7 * 24 * time.Hour).Unix(),
		Issuer: "gitfleet", Device: true, Identity: f.identity(i), Key: f.fingerprint(i), Cert: f.certClaim(i),
	})
	header, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	signed := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(claims)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(signed))
	return signed + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// authenticate sends device i's auth request, signed with its key
// (fleet.key), and returns the token.
func authenticate(ctx context.Context, c *http.Client, base string, f *fleet, i int) (string, error) {
	k := f.key(i)
	der, _ := x509.MarshalPKIXPublicKey(k.Public())
	idData, _ := json.Marshal(f.identity(i))
	body, _ := json.Marshal(deviceapi.AuthRequest{IDData: string(idData),
		PubKey: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/devices/v1/authentication/auth_requests", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-MEN-Signature", base64.StdEncoding.EncodeToString(ed25519.Sign(k, body)))
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("auth request of %s: %w", f.name(i), err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("auth request of %s: %s %s", f.name(i), resp.Status, b)
	}
	return string(b), nil
}

var nextBody = []byte(`{"device_provides":{"artifact_name":"app-1","device_type":"sim"}}`)

// poll sends one POST v2 deployments/next.
func poll(ctx context.Context, c *http.Client, base, token string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/devices/v2/deployments/device/deployments/next", bytes.NewReader(nextBody))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, b, err
}

// sameClaims checks that two tokens have the same header and the same
// claims but for the ones that differ between any two tokens of a device
// (jti, iat, exp), and the same lifetime (exp − iat).
func sameClaims(issued, minted string) error {
	decode := func(tok string) (string, map[string]any, error) {
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			return "", nil, fmt.Errorf("token %.20q… is not three dot-separated parts", tok)
		}
		b, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			return "", nil, fmt.Errorf("token payload: %w", err)
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return "", nil, fmt.Errorf("token payload: %w", err)
		}
		return parts[0], m, nil
	}
	h1, c1, err := decode(issued)
	if err != nil {
		return err
	}
	h2, c2, err := decode(minted)
	if err != nil {
		return err
	}
	if h1 != h2 {
		return fmt.Errorf("header %s, minted %s", h1, h2)
	}
	life := func(c map[string]any) float64 {
		exp, _ := c["exp"].(float64)
		iat, _ := c["iat"].(float64)
		return exp - iat
	}
	if l1, l2 := life(c1), life(c2); l1 != l2 {
		return fmt.Errorf("lifetime %.0f s, minted %.0f s", l1, l2)
	}
	for _, c := range []map[string]any{c1, c2} {
		delete(c, "jti")
		delete(c, "iat")
		delete(c, "exp")
	}
	if !reflect.DeepEqual(c1, c2) {
		j1, _ := json.Marshal(c1)
		j2, _ := json.Marshal(c2)
		return fmt.Errorf("claims %s, minted %s", j1, j2)
	}
	return nil
}
