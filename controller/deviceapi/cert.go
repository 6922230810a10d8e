package deviceapi

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/controller/reconcile"
	"github.com/gitfleet/gitfleet/controller/store"
	"github.com/gitfleet/gitfleet/schema"
	"github.com/labstack/echo/v5"
)

// Admission by device certificate (DeviceCA manifests).
//
// A device that presents a client certificate over mutual TLS is judged by
// the certificate alone, never by Device manifests:
//
//   - the certificate must chain to the CA certificate of one DeviceCA of
//     the live commit and be within its validity (as must every
//     certificate of the chain), with no key usage that excludes client
//     authentication;
//   - its serial must not be revoked by that DeviceCA;
//   - its public key must be the key of the auth request (the pubkey the
//     body carries, whose X-MEN-Signature verified), so a stolen
//     certificate without its key is worth nothing;
//   - the request's id_data must be exactly the identity the DeviceCA
//     reads from the certificate (schema.DeviceCA.Identify): the same
//     attributes with the same string values, so a device cannot claim
//     another's identity with its own valid certificate.
//
// The device is then accepted as "<DeviceCA name>-<name attribute>"; its
// token carries Claims.Cert, "<DeviceCA name>/<serial in hex>", so that
// every later call checks again that the DeviceCA is still declared and
// the serial not revoked (Revoked: two map reads, no allocation). Tokens
// without Cert are checked as before: a device without a certificate
// works exactly as if no DeviceCA existed.

// certIndex is the DeviceCAs of one Snapshot.
type certIndex struct {
	byName map[string]*schema.DeviceCA
	list   []*schema.DeviceCA
	pool   *x509.CertPool // every DeviceCA's certificates; nil without DeviceCAs
}

func newCertIndex(f *schema.Fleet) *certIndex {
	ix := &certIndex{byName: map[string]*schema.DeviceCA{}}
	if f == nil || len(f.DeviceCAs) == 0 {
		return ix
	}
	ix.pool = x509.NewCertPool()
	for i := range f.DeviceCAs {
		ca := &f.DeviceCAs[i]
		ix.byName[ca.Name] = ca
		ix.list = append(ix.list, ca)
		for _, c := range ca.Certificates() {
			ix.pool.AddCert(c)
		}
	}
	return ix
}

// certIndexes caches the index of the live Snapshot, like admissions.
type certIndexes struct{ perSnapshot[certIndex] }

func (c *certIndexes) get(snap *reconcile.Snapshot) *certIndex {
	return c.perSnapshot.get(snap, newCertIndex, nil)
}

// ClientCAs returns the CA certificates of the live commit's DeviceCAs, to
// verify client certificates with in the TLS handshake, or nil when it
// declares none (then the server should not ask for one). The pool is the
// same value for as long as the same Snapshot is served.
func (a *API) ClientCAs() *x509.CertPool {
	snap := a.opts.Live()
	if snap == nil {
		return nil
	}
	return a.cas.get(snap).pool
}

// Revoked reports whether the live commit refuses the certificate serial
// (lowercase hex, schema.SerialHex) of the DeviceCA caName: revoked, or
// the DeviceCA is no longer declared. It does not allocate.
func (a *API) Revoked(caName, serial string) bool {
	snap := a.opts.Live()
	if snap == nil {
		return false // nothing is served: every call answers 503 anyway
	}
	ca := a.cas.get(snap).byName[caName]
	return ca == nil || ca.Revoked(serial)
}

// revokedCert is the token check's revocation hook: cert is Claims.Cert.
func (a *API) revokedCert(cert string) bool {
	caName, serial, ok := strings.Cut(cert, "/")
	return !ok || a.Revoked(caName, serial)
}

// certClaim is what a token of a device admitted by certificate carries.
func certClaim(caName, serial string) string { return caName + "/" + serial }

// errCertRefused is wrapped by every refusal of a client certificate; the
// text after it is for the device and the event.
var errCertRefused = errors.New("client certificate refused")

// admitCert judges a device that authenticates with a client certificate
// (see the package comment above). It returns (nil, "", nil) when the
// request carries no certificate or the live commit declares no DeviceCA:
// the Device manifests decide. Otherwise it returns the device as a
// manifest would (its name, identity and device type) and the token's
// Cert claim, or an error wrapping errCertRefused.
func (a *API) admitCert(r *http.Request, snap *reconcile.Snapshot, identity Identity, fp string, now time.Time) (*schema.Device, string, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return nil, "", nil
	}
	ix := a.cas.get(snap)
	if len(ix.list) == 0 {
		return nil, "", nil
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	var ca *schema.DeviceCA
	var lastErr error
	for _, c := range ix.list {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: c.Pool(), Intermediates: inter, CurrentTime: now,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err == nil {
			ca = c
			break
		}
		lastErr = err
	}
	if ca == nil {
		return nil, "", fmt.Errorf("%w: %s is not a valid certificate of any DeviceCA of the live commit (%v)", errCertRefused, leaf.Subject, lastErr)
	}
	serial := schema.SerialHex(leaf.SerialNumber)
	if ca.Revoked(serial) {
		return nil, "", fmt.Errorf("%w: serial 0x%s of DeviceCA %s is revoked", errCertRefused, serial, ca.Name)
	}
	certFP, err := artifact.Fingerprint(leaf.PublicKey)
	if err != nil || certFP != fp {
		return nil, "", fmt.Errorf("%w: the auth request is signed with key %s, not with the certificate's key (serial 0x%s of DeviceCA %s)", errCertRefused, shortFP(fp), serial, ca.Name)
	}
	want, name, err := ca.Identify(leaf)
	if err != nil {
		return nil, "", fmt.Errorf("%w: serial 0x%s of DeviceCA %s: %v", errCertRefused, serial, ca.Name, err)
	}
	if identity.Typed || !maps.Equal(map[string]string(identity.Strings), want) {
		return nil, "", fmt.Errorf("%w: id_data %s is not the identity the certificate holds (serial 0x%s of DeviceCA %s: %s)", errCertRefused, identity.Canonical(), serial, ca.Name, Attributes(want).Canonical())
	}
	return certDevice(ca, name, want), certClaim(ca.Name, serial), nil
}

// certDevice is the Device a DeviceCA admits: what the rest of the device
// API knows a device by.
func certDevice(ca *schema.DeviceCA, name string, identity map[string]string) *schema.Device {
	return &schema.Device{
		Meta: schema.Meta{APIVersion: schema.APIVersion, Kind: schema.KindDevice, Name: name, Source: ca.Source},
		Spec: schema.DeviceSpec{Identity: identity, DeviceType: ca.Spec.DeviceType},
	}
}

// admitToken returns the device a token's claims stand for in snap, or
// nil when snap no longer accepts it: by its DeviceCA for a token of a
// certificate (revocation was checked with the token), by the Device
// manifests otherwise.
func (a *API) admitToken(snap *reconcile.Snapshot, cl *Claims) *schema.Device {
	if cl.Cert == "" {
		adm := a.adm.get(snap)
		if cl.admitted != nil && cl.admittedBy == adm {
			// Admitted by this very index when the token was first
			// seen (compactClaims): admission depends on nothing else.
			return cl.admitted
		}
		return adm.admit(cl.Identity, cl.Typed, cl.Key)
	}
	caName, serial, _ := strings.Cut(cl.Cert, "/")
	ca := a.cas.get(snap).byName[caName]
	if ca == nil || ca.Revoked(serial) {
		return nil
	}
	attr := ca.Spec.NameAttribute
	// The identity in the token is the certificate's (admitCert); a
	// commit that changes the DeviceCA's mapping makes the device
	// authenticate again.
	if len(cl.Identity) != len(ca.Spec.Identity) {
		return nil
	}
	for k := range ca.Spec.Identity {
		if _, ok := cl.Identity[k]; !ok {
			return nil
		}
		if attr == "" {
			attr = k
		}
	}
	return certDevice(ca, ca.Name+"-"+cl.Identity[attr], cl.Identity)
}

// refuseCert answers an auth request whose certificate admitCert refused:
// 401 with the reason, logged, and recorded as a device.refused event
// (at most UnknownRate per source address, like pending devices).
func (a *API) refuseCert(c *echo.Context, snap *reconcile.Snapshot, id string, err error, now time.Time) error {
	msg := strings.TrimPrefix(err.Error(), errCertRefused.Error()+": ")
	a.log.Info("client certificate refused", "device_id", id, "err", msg)
	if a.unknown.allow(a.opts.Clients.Key(c.Request()), now) {
		a.event(c.Request().Context(), store.Event{Time: now, Commit: snap.Commit.SHA, Kind: schema.EventDeviceRefused, Subject: id,
			Message: "device " + id + " refused: " + msg})
	}
	return unauthorized(c, "client certificate refused: "+msg)
}

func shortFP(fp string) string {
	if len(fp) > 16 {
		return fp[:16] + "…"
	}
	return fp
}
