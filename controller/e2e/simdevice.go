package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/deviceapi"
)

// SimDevice is a simulated Mender device that speaks the device API over
// HTTPS the way the stock client does, without installing anything: it
// signs an auth request with its key (Ed25519 by default), keeps the token,
// sends its inventory, polls deployments/next (POST v2) with its provides,
// fetches the presigned artifact URL (a Range request for the first bytes,
// or the whole file) and reports each status. Tests decide the outcome of
// each install. It is safe for use by one goroutine at a time; many
// SimDevices may share one http.Client.
type SimDevice struct {
	// Name is the Device manifest entry that declares it (what rollouts
	// know it by).
	Name string
	// Identity is its id_data.
	Identity map[string]string
	// DeviceType and ArtifactName are what it provides; Update sets
	// ArtifactName after a successful install.
	DeviceType   string
	ArtifactName string
	// Token is the JWT of its last successful Authenticate.
	Token string

	key    crypto.Signer
	base   string   // https://host:port
	bases  []string // SetBases: requests take turns
	turn   int
	client *http.Client
	pubPEM string
}

// SetBases makes the device's requests take turns among several
// controllers (replicas behind a load balancer that does not pin
// devices): its first request goes to bases[0], the next to bases[1], …
func (d *SimDevice) SetBases(bases ...string) {
	d.bases = nil
	for _, b := range bases {
		d.bases = append(d.bases, strings.TrimSuffix(b, "/"))
	}
	if len(d.bases) > 0 {
		d.base = d.bases[0]
	}
}

// ErrPending is returned by Authenticate when the controller answers 401:
// no Device manifest admits the device (yet).
var ErrPending = errors.New("sim device: not accepted (401)")

// ErrAborted is returned by Report when the controller answers 409: the
// deployment was aborted.
var ErrAborted = errors.New("sim device: deployment aborted (409)")

// maxSimBody bounds what a SimDevice reads from any answer.
const maxSimBody = 1 << 20

// NewSimDevice makes a device that talks to base (https://host:port) with
// client. A nil key makes an Ed25519 key derived from name, so the same
// name always has the same key (and fingerprint) in every run.
func NewSimDevice(base string, client *http.Client, name string, identity map[string]string, deviceType, artifactName string, key crypto.Signer) *SimDevice {
	if key == nil {
		seed := sha256.Sum256([]byte("gitfleet sim device key\x00" + name))
		key = ed25519.NewKeyFromSeed(seed[:])
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		panic(fmt.Sprintf("sim device %s: %v", name, err)) // only for key types x509 does not know
	}
	return &SimDevice{
		Name: name, Identity: identity, DeviceType: deviceType, ArtifactName: artifactName,
		key: key, base: strings.TrimSuffix(base, "/"), client: client,
		pubPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	}
}

// Fingerprint is the hex SHA-256 of the device's public key (DER), as a
// Device manifest's publicKeySHA256 names it.
func (d *SimDevice) Fingerprint() string {
	fp, err := artifact.Fingerprint(d.key.Public())
	if err != nil {
		panic(err)
	}
	return fp
}

// ID is the controller's ID for the device (deviceapi.DeviceID of its
// identity): what the store keys its record by.
func (d *SimDevice) ID() string { return deviceapi.DeviceID(deviceapi.Attributes(d.Identity)) }

// AuthBody returns the auth request body the device sends and its
// X-MEN-Signature.
func (d *SimDevice) AuthBody() (body []byte, signature string, err error) {
	id, err := json.Marshal(d.Identity)
	if err != nil {
		return nil, "", err
	}
	body, err = json.Marshal(deviceapi.AuthRequest{IDData: string(id), PubKey: d.pubPEM})
	if err != nil {
		return nil, "", err
	}
	signature, err = d.sign(body)
	return body, signature, err
}

// sign returns body's X-MEN-Signature by the device's key.
func (d *SimDevice) sign(body []byte) (string, error) {
	var sig []byte
	switch k := d.key.(type) {
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, body)
	default: // RSA PKCS#1 v1.5 or ECDSA ASN.1, over SHA-256
		sum := sha256.Sum256(body)
		var err error
		if sig, err = k.Sign(rand.Reader, sum[:], crypto.SHA256); err != nil {
			return "", err
		}
	}
	return base64.StdEncoding.EncodeToString(sig), nil
}

// Authenticate posts a signed auth request. On 200 the device keeps the
// token; on 401 it returns ErrPending.
func (d *SimDevice) Authenticate(ctx context.Context) error {
	body, sig, err := d.AuthBody()
	if err != nil {
		return fmt.Errorf("sim device %s: auth body: %w", d.Name, err)
	}
	code, resp, err := d.do(ctx, http.MethodPost, "/api/devices/v1/authentication/auth_requests", body, map[string]string{"X-MEN-Signature": sig}, false)
	switch {
	case err != nil:
		return err
	case code == http.StatusOK:
		d.Token = string(resp)
		return nil
	case code == http.StatusUnauthorized:
		return ErrPending
	}
	return d.unexpected("auth request", code, resp)
}

// SendInventory replaces the device's inventory (PUT). device_type and
// artifact_name are added as the Mender client adds them.
func (d *SimDevice) SendInventory(ctx context.Context, attrs map[string]string) error {
	inv := []deviceapi.InventoryAttribute{
		{Name: "device_type", Value: jsonString(d.DeviceType)},
		{Name: "artifact_name", Value: jsonString(d.ArtifactName)},
	}
	for k, v := range attrs {
		inv = append(inv, deviceapi.InventoryAttribute{Name: k, Value: jsonString(v)})
	}
	body, _ := json.Marshal(inv)
	code, resp, err := d.do(ctx, http.MethodPut, "/api/devices/v1/inventory/device/attributes", body, nil, true)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return d.unexpected("inventory", code, resp)
	}
	return nil
}

// Next polls POST v2 deployments/next with the device's provides. It
// returns nil (and no error) when the answer is 204: nothing to do.
func (d *SimDevice) Next(ctx context.Context) (*deviceapi.NextResponse, error) {
	body, _ := json.Marshal(map[string]any{"device_provides": map[string]string{
		"device_type": d.DeviceType, "artifact_name": d.ArtifactName,
	}})
	code, resp, err := d.do(ctx, http.MethodPost, "/api/devices/v2/deployments/device/deployments/next", body, nil, true)
	switch {
	case err != nil:
		return nil, err
	case code == http.StatusNoContent:
		return nil, nil
	case code != http.StatusOK:
		return nil, d.unexpected("deployments/next", code, resp)
	}
	var next deviceapi.NextResponse
	if err := json.Unmarshal(resp, &next); err != nil {
		return nil, fmt.Errorf("sim device %s: deployments/next: %w", d.Name, err)
	}
	if next.ID == "" || next.Artifact.Source.URI == "" {
		return nil, fmt.Errorf("sim device %s: deployments/next: incomplete answer %s", d.Name, resp)
	}
	return &next, nil
}

// Report sends a deployment status. It returns ErrAborted on 409.
func (d *SimDevice) Report(ctx context.Context, deployment, status string) error {
	body, _ := json.Marshal(deviceapi.StatusReport{Status: status})
	code, resp, err := d.do(ctx, http.MethodPut, "/api/devices/v1/deployments/device/deployments/"+deployment+"/status", body, nil, true)
	switch {
	case err != nil:
		return err
	case code == http.StatusNoContent:
		return nil
	case code == http.StatusConflict:
		return ErrAborted
	}
	return d.unexpected("status "+status, code, resp)
}

// Download fetches the presigned artifact URL without an Authorization
// header, as the stock client does. With first > 0 it asks for the first
// bytes only (Range: bytes=0-(first-1)) and checks the 206 answer and its
// Content-Range; otherwise it reads the whole file. It returns the bytes
// read and the artifact's total size.
func (d *SimDevice) Download(ctx context.Context, uri string, first int64) (got []byte, total int64, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("sim device %s: download: %w", d.Name, err)
	}
	if first > 0 {
		req.Header.Set("Range", "bytes=0-"+strconv.FormatInt(first-1, 10))
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("sim device %s: download: %w", d.Name, err)
	}
	defer resp.Body.Close()
	limit := int64(maxSimBody)
	if first > 0 {
		limit = first
	}
	got, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, 0, fmt.Errorf("sim device %s: download: %w", d.Name, err)
	}
	switch {
	case first > 0 && resp.StatusCode == http.StatusPartialContent:
		// Content-Range: bytes 0-N/TOTAL
		cr := resp.Header.Get("Content-Range")
		_, tot, ok := strings.Cut(cr, "/")
		if total, err = strconv.ParseInt(tot, 10, 64); !ok || err != nil || int64(len(got)) != min(first, total) {
			return nil, 0, fmt.Errorf("sim device %s: download: Content-Range %q for %d bytes", d.Name, cr, len(got))
		}
	case first == 0 && resp.StatusCode == http.StatusOK:
		total = resp.ContentLength
		if total != int64(len(got)) {
			return nil, 0, fmt.Errorf("sim device %s: download: %d bytes, Content-Length %d", d.Name, len(got), total)
		}
	default:
		return nil, 0, d.unexpected("download", resp.StatusCode, got)
	}
	return got, total, nil
}

// Outcome is how a simulated install ends.
type Outcome int

const (
	Succeed Outcome = iota // reports success
	Fail                   // reports failure (after installing)
)

// Update carries out a deployment as the Mender client does: downloading
// (and the download itself, the first rangeBytes bytes, or all of it when
// 0), installing, rebooting, then success or failure. It stops at the
// first error; ErrAborted means the controller answered 409. After a
// success the device provides the new artifact_name.
func (d *SimDevice) Update(ctx context.Context, dep *deviceapi.NextResponse, out Outcome, rangeBytes int64) error {
	if err := d.Report(ctx, dep.ID, deviceapi.StatusDownloading); err != nil {
		return err
	}
	if _, _, err := d.Download(ctx, dep.Artifact.Source.URI, rangeBytes); err != nil {
		return err
	}
	for _, st := range []string{deviceapi.StatusInstalling, deviceapi.StatusRebooting} {
		if err := d.Report(ctx, dep.ID, st); err != nil {
			return err
		}
	}
	if out == Fail {
		return d.Report(ctx, dep.ID, deviceapi.StatusFailure)
	}
	if err := d.Report(ctx, dep.ID, deviceapi.StatusSuccess); err != nil {
		return err
	}
	d.ArtifactName = dep.Artifact.ArtifactName
	return nil
}

// do sends one request and returns the status and (bounded) body.
func (d *SimDevice) do(ctx context.Context, method, path string, body []byte, hdr map[string]string, auth bool) (int, []byte, error) {
	base := d.base
	if len(d.bases) > 0 {
		base = d.bases[d.turn%len(d.bases)]
		d.turn++
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("sim device %s: %s %s: %w", d.Name, method, path, err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth {
		req.Header.Set("Authorization", "Bearer "+d.Token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("sim device %s: %s %s: %w", d.Name, method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxSimBody))
	if err != nil {
		return 0, nil, fmt.Errorf("sim device %s: %s %s: %w", d.Name, method, path, err)
	}
	return resp.StatusCode, b, nil
}

func (d *SimDevice) unexpected(what string, code int, body []byte) error {
	if len(body) > 200 {
		body = body[:200]
	}
	return fmt.Errorf("sim device %s: %s: unexpected %d %s", d.Name, what, code, bytes.TrimSpace(body))
}

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
