// Package receive takes push webhooks from Git hosts and turns a valid push
// to the tracked ref into a call to a trigger, which makes the controller
// fetch at once instead of waiting for its next poll.
//
// # The model
//
// A webhook is a hint, never a source of truth. The only thing a delivery
// can do is make the controller fetch sooner: the controller then fetches
// the tracked ref itself, and loads, validates and (if configured) checks
// the signature of whatever commit it finds there. Nothing in the payload is
// trusted for content. In particular [Push.After], the commit the host says
// the ref now points at, is only what the sender claims; a forged or stale
// value can at worst cause one extra fetch, never a different commit going
// live. That is also why a deduplication store that is down fails open: the
// push is triggered anyway, and a second fetch of the same commit is a no-op.
//
// What the receiver does guard is the trigger itself, so that nobody but the
// Git host can make the controller work: every request must carry a valid
// signature (or token) for its provider's secret, checked in constant time
// over the raw body before any JSON is parsed; bodies are bounded; requests
// are rate limited per source address (every request) and globally
// (verified deliveries only, so forgeries cannot crowd out the real host);
// repeated delivery IDs are dropped; and pushes to other refs or other repositories are ignored.
//
// # Mounting
//
// [Handler] is a plain [net/http.Handler]. Mount it two ways at once, which
// [Handler.Routes] lists for a prefix such as "/hooks":
//
//	POST /hooks            the provider is detected from the headers
//	POST /hooks/github     GitHub only (and likewise /gitlab, /gitea,
//	POST /hooks/…          /forgejo, /bitbucket, /generic)
//
// Detection looks at the event headers in this order, because some hosts
// also send another host's headers for compatibility (Gitea and Forgejo send
// X-GitHub-Event too): X-Forgejo-Event, X-Gitea-Event, X-Gitlab-Event (or
// X-Gitlab-Token), X-Event-Key (Bitbucket), X-GitHub-Event, and finally any
// X-Gitfleet-* header. A per-provider path skips detection and treats the
// request as that provider's, whatever other headers it carries; use it when
// a proxy adds or strips headers, or to keep one provider's secret from being
// tried on another's requests.
//
// # Providers
//
//	provider   authenticity                         event                          delivery ID
//	github     X-Hub-Signature-256: sha256=<hex>     X-GitHub-Event: push | ping    X-GitHub-Delivery
//	gitlab     X-Gitlab-Token: <secret>, or          X-Gitlab-Event: Push Hook |    Idempotency-Key, else
//	           webhook-signature (see below)           Tag Push Hook | System Hook  webhook-id, else
//	                                                                                X-Gitlab-Event-UUID
//	gitea      X-Gitea-Signature: <hex>              X-Gitea-Event: push            X-Gitea-Delivery
//	forgejo    X-Forgejo-Signature: <hex>            X-Forgejo-Event: push          X-Forgejo-Delivery
//	           (else X-Gitea-Signature)
//	bitbucket  X-Hub-Signature: sha256=<hex>         X-Event-Key: repo:refs_changed X-Request-Id (Server),
//	                                                   (Server/Data Center),        X-Request-UUID (Cloud)
//	                                                   repo:push (Cloud),
//	                                                   diagnostics:ping
//	generic    X-Gitfleet-Signature: sha256=<hex>    X-Gitfleet-Event: push (the    X-Gitfleet-Delivery
//	                                                   default) | ping
//
// Every <hex> is the lowercase or uppercase hex HMAC-SHA256 of the raw
// request body keyed with the secret, except the generic provider's when it
// sends a timestamp (below). The GitLab token is the secret itself, compared
// in constant time (over SHA-256 digests, so its length does not leak).
// Being a token rather than a MAC, it proves who sent a request but not that
// the body is unchanged; that is acceptable only because the body is never
// trusted, and it is one more reason to serve webhooks over TLS only.
// GitLab can also sign requests with a "signing token" (newer versions,
// behind GitLab's webhook_signing_token feature flag as of 2026): configure
// that token, "whsec_<base64 key>", as GitLab's secret and the receiver
// requires webhook-signature ("v1,<base64 HMAC-SHA256>" of
// "<webhook-id>.<webhook-timestamp>.<body>", the Standard Webhooks format)
// with a timestamp within Options.MaxSkew, instead of X-Gitlab-Token.
// GitHub's legacy SHA-1 X-Hub-Signature is not accepted. Payloads must be
// JSON: a host configured to send form-encoded payloads gets 415.
//
// # The generic provider
//
// For CI jobs and scripts, the generic provider takes a small JSON body:
//
//	{"ref": "refs/heads/main", "after": "<commit sha>", "repository": "org/fleet", "pusher": "ci"}
//
// Only "ref" is required, and it must be a full ref name. "repository", when
// present, must name a tracked repository; when absent, the secret alone
// ties the request to the controller's repository.
//
// Replay protection: every generic request carries an X-Gitfleet-Timestamp
// header (decimal Unix seconds) and an X-Gitfleet-Delivery ID (unique per
// delivery, at most 128 printable ASCII characters), and the MAC covers
// both as well as the body. A request without them, or whose timestamp is
// further than [Options.MaxSkew] from the receiver's clock, is refused with
// 401; within that window a replayed delivery ID is a duplicate (200,
// nothing triggered), since IDs are remembered for [Options.DedupeTTL],
// which New requires to be at least twice MaxSkew. So a captured delivery
// can never trigger a second fetch. (Should the store that remembers IDs
// be down, deduplication fails open and a replay within MaxSkew causes
// one extra fetch, which is harmless.) The string that is MACed is
// exactly
//
//	<X-Gitfleet-Timestamp> "\n" <X-Gitfleet-Delivery> "\n" <body>
//
// In a shell:
//
//	ts=$(date +%s); id=$(uuidgen); body='{"ref":"refs/heads/main"}'
//	sig=$(printf '%s\n%s\n%s' "$ts" "$id" "$body" | openssl dgst -sha256 -hmac "$SECRET" -r | cut -d' ' -f1)
//	curl -H 'Content-Type: application/json' -H "X-Gitfleet-Timestamp: $ts" \
//	  -H "X-Gitfleet-Delivery: $id" -H "X-Gitfleet-Signature: sha256=$sig" \
//	  -d "$body" https://controller.example/hooks/generic
//
// # Responses
//
// Every response is a small JSON object, {"status": …, "reason": …}, where
// status is one of the [Outcome] values:
//
//	202 triggered     a push to the tracked ref; the trigger was called
//	202 ignored       verified, but another event, ref or repository
//	200 ping          a host's test delivery (GitHub ping, Bitbucket diagnostics:ping)
//	200 duplicate     a delivery ID seen within the dedupe TTL; nothing triggered
//	400 malformed     a body or header that does not parse; reason says which
//	400 unknown_sender  no provider's headers
//	401 unauthorized  missing, malformed or wrong signature/token; stale timestamp
//	403 disabled      no secret is configured for that provider
//	405 method_not_allowed  not POST
//	413 too_large     body over Options.MaxBody
//	415 unsupported_media_type  a form-encoded payload
//	429 rate_limited  with Retry-After in seconds
//
// Duplicates get 200, not an error: a host that retries a delivery we did
// act on should mark it delivered, not failed.
package receive
