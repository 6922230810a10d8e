package receive

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Why a request was refused as unauthorized. The text is the response's
// reason, so it says what is wrong without saying anything about the secret.
var (
	errUnsigned      = errors.New("missing signature")
	errBadSignature  = errors.New("signature does not match")
	errSigFormat     = errors.New("malformed signature header")
	errStale         = errors.New("timestamp outside the allowed skew")
	errBadTimestamp  = errors.New("malformed timestamp")
	errNeedTimestamp = errors.New("missing X-Gitfleet-Timestamp (the generic provider requires a signed timestamp and delivery ID)")
	errNeedDelivery  = errors.New("missing X-Gitfleet-Delivery (the generic provider requires a signed timestamp and delivery ID)")
)

// verifier checks a request's authenticity against secret over the raw body.
// clock is for schemes that sign a timestamp.
type verifier func(h http.Header, body []byte, secret []byte, clock skewClock) error

// skewClock is the receiver's time and how far a signed timestamp may be
// from it.
type skewClock struct {
	now     time.Time
	maxSkew time.Duration
}

// hmacHeader verifies a hex HMAC-SHA256 of the body in header, with an
// optional "sha256=" prefix that is required when prefixed is set.
func hmacHeader(header string, prefixed bool) verifier {
	return func(h http.Header, body, secret []byte, _ skewClock) error {
		v := h.Get(header)
		if v == "" {
			return errUnsigned
		}
		return checkHexMAC(v, prefixed, secret, body)
	}
}

// checkHexMAC compares a "[sha256=]<hex>" value with HMAC-SHA256(secret,
// msg...) in constant time.
func checkHexMAC(v string, prefixed bool, secret []byte, msg ...[]byte) error {
	if prefixed {
		algo, hexSig, ok := strings.Cut(v, "=")
		if !ok || !strings.EqualFold(algo, "sha256") {
			return errSigFormat
		}
		v = hexSig
	}
	got, err := hex.DecodeString(strings.TrimSpace(v))
	if err != nil || len(got) != sha256.Size {
		return errSigFormat
	}
	mac := hmac.New(sha256.New, secret)
	for _, m := range msg {
		mac.Write(m)
	}
	if !hmac.Equal(got, mac.Sum(nil)) {
		return errBadSignature
	}
	return nil
}

// verifyGitLab checks a GitLab request. With a signing token (a secret of
// the form "whsec_<base64 key>") it requires the Standard Webhooks signature
// GitLab sends for such hooks; otherwise it compares the X-Gitlab-Token
// header with the secret. Hashing both first makes that comparison
// constant-time in the token's length too.
func verifyGitLab(h http.Header, body, secret []byte, clock skewClock) error {
	if key, ok := signingKey(secret); ok {
		return verifyStandardWebhook(h, body, key, clock)
	}
	tok := h.Get("X-Gitlab-Token")
	if tok == "" {
		return errUnsigned
	}
	a, b := sha256.Sum256([]byte(tok)), sha256.Sum256(secret)
	if !hmac.Equal(a[:], b[:]) {
		return errBadSignature
	}
	return nil
}

const signingKeyPrefix = "whsec_"

// signingKey decodes a "whsec_<base64>" Standard Webhooks secret.
func signingKey(secret []byte) ([]byte, bool) {
	b64, ok := strings.CutPrefix(string(secret), signingKeyPrefix)
	if !ok {
		return nil, false
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) == 0 {
		return nil, false
	}
	return key, true
}

// verifyStandardWebhook checks a Standard Webhooks signature: the
// webhook-signature header holds space-separated "v1,<base64>" entries, one
// of which must be the HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>",
// and the timestamp must be within the allowed skew.
func verifyStandardWebhook(h http.Header, body, key []byte, clock skewClock) error {
	sigs := h.Get("Webhook-Signature")
	if sigs == "" {
		return errUnsigned
	}
	id, ts := h.Get("Webhook-Id"), h.Get("Webhook-Timestamp")
	if id == "" || ts == "" {
		return errSigFormat
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	matched, sawV1 := false, false
	for _, f := range strings.Fields(sigs) {
		ver, sig, ok := strings.Cut(f, ",")
		if !ok || ver != "v1" {
			continue
		}
		sawV1 = true
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			matched = true
		}
	}
	switch {
	case !sawV1:
		return errSigFormat
	case !matched:
		return errBadSignature
	}
	// The timestamp is checked after the MAC, so that only a signed one
	// can be called stale.
	return checkTimestamp(ts, clock.now, clock.maxSkew, true)
}

// verifyForgejo checks X-Forgejo-Signature if it is present, else
// X-Gitea-Signature. A bad Forgejo signature is not rescued by a good Gitea
// one.
func verifyForgejo(h http.Header, body, secret []byte, clock skewClock) error {
	if v := h.Get("X-Forgejo-Signature"); v != "" {
		return checkHexMAC(v, false, secret, body)
	}
	return hmacHeader("X-Gitea-Signature", false)(h, body, secret, clock)
}

// genericMessage is what the generic provider MACs:
// "<timestamp>\n<delivery>\n<body>".
func genericMessage(timestamp, delivery string, body []byte) [][]byte {
	return [][]byte{[]byte(timestamp + "\n" + delivery + "\n"), body}
}

// checkTimestamp checks a generic X-Gitfleet-Timestamp against the clock.
func checkTimestamp(ts string, now time.Time, skew time.Duration, required bool) error {
	if ts == "" {
		if required {
			return errNeedTimestamp
		}
		return nil
	}
	for i := 0; i < len(ts); i++ {
		if ts[i] < '0' || ts[i] > '9' {
			return errBadTimestamp
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(ts) > 12 {
		return errBadTimestamp
	}
	d := now.Sub(time.Unix(sec, 0))
	if d > skew || d < -skew {
		return errStale
	}
	return nil
}

// SignGeneric returns the X-Gitfleet-Signature value for a generic request:
// "sha256=" and the hex HMAC-SHA256 of the string the package documentation
// describes. For senders written in Go and for tests.
func SignGeneric(secret Secret, timestamp, delivery string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	for _, m := range genericMessage(timestamp, delivery, body) {
		mac.Write(m)
	}
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}
