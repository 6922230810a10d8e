// Package notify sends Gitfleet's events out: to a signed JSON webhook, by
// e-mail, and to Slack-compatible incoming webhooks.
//
// # The model
//
// An [Event] is one thing that happened in the fleet, named by one of the
// schema's #Event kinds ([Kinds]: rollout.started, alert.raised,
// commit.refused, …), with the commit, the subject (rollout, device,
// check), the time, free-form details, and an ID that is unique per event
// and serves as the idempotency key.
//
// A [Sink] is one destination. [Sink.Notify] never blocks the caller and
// never fails: the sink's [Filter] (a Notification manifest's events,
// rollouts and checks) decides whether it wants the event (an event with an
// unknown kind or a malformed ID is logged and dropped), and a wanted
// event goes into the sink's own bounded in-memory queue. One goroutine per
// sink delivers from that queue. When the queue is full the oldest event is
// dropped and counted ([Stats.Dropped]), so a stalled receiver costs a
// bounded amount of memory and the newest events are the ones kept. The
// queue is not persisted: notifications are best-effort reports of state
// that the controller keeps elsewhere, not the state itself.
//
// The webhook sink sends one request per event and retries a failed
// delivery with exponential backoff and jitter, carrying the same delivery
// ID every time, so a receiver that stores the IDs it has seen processes
// each event once. The e-mail and Slack sinks gather the events of a window
// (starting when the first arrives) into one message: a burst of 1,000
// alerts makes one digest, which counts events by kind, lists the first
// ones in full and says how many more (and how many were dropped) there
// were.
//
// Names that reach a subject line, a header or a chat message (device
// IDs, check names, details) are made single-line there: control
// characters become spaces and long values are cut.
//
// [Sink.Close] stops a sink: it delivers what is queued without waiting for
// the window, until its context ends.
//
// # The webhook wire format
//
// Each event is an HTTPS POST with a JSON body ([Payload]):
//
//	{"id":"Z3Q…","event":"alert.raised","time":"2026-01-02T03:04:05Z",
//	 "commit":"9f2c…","rollout":"canary","device":"dev-042",
//	 "check":"ssh-root","details":{"severity":"critical","evidence":"…"}}
//
// commit, rollout, device, check and details are left out when empty. The
// headers:
//
//	Content-Type          application/json
//	User-Agent            Gitfleet-Notify/1
//	X-Gitfleet-Event      the event kind, e.g. alert.raised
//	X-Gitfleet-Delivery   the event ID: the idempotency key, the same on every retry
//	X-Gitfleet-Timestamp  Unix seconds when this attempt was sent (fresh per attempt)
//	X-Gitfleet-Signature  sha256=<hex HMAC-SHA256(secret, timestamp "\n" delivery "\n" body)>
//
// The signature is left out when the sink has no secret. It is the scheme
// Gitfleet's own generic inbound webhook verifies (see package
// webhooks/receive), so a receiver checks it the same way: recompute the
// HMAC over the raw body, compare in constant time, refuse a timestamp far
// from its clock, and remember delivery IDs to drop replays. [Sign]
// computes it; in a shell:
//
//	printf '%s\n%s\n%s' "$timestamp" "$delivery" "$body" |
//	  openssl dgst -sha256 -hmac "$secret"
//
// A 2xx response is success. A network error, 408, 429 or 5xx is retried,
// after the Retry-After the server sent if any, else after the backoff
// (see [RetryOptions] for the intervals, attempt cap and the per-delivery
// deadline). Any other status, a redirect included, fails the delivery at
// once: redirects are never followed, so a signed body goes only where it
// was configured to. Only https URLs are accepted. At most 64 KiB of a
// response body is read.
//
// # E-mail and Slack
//
// A digest mail has the subject "[Gitfleet] <event>: <subject>" for a
// single event, else "[Gitfleet] <n> events: <n> <kind>, …" (most frequent
// kind first), and a plain-text body: the time span, the counts by kind,
// the number dropped from a full queue if any, the first [EmailOptions.Listed]
// events in full (commit, details, ID) and how many more there were. Its
// Message-ID is derived from the events' IDs, so a retried send is the same
// message. The mail goes through the configured submission server with
// STARTTLS required (unless [EmailOptions.AllowPlaintext]) and AUTH PLAIN
// when a username is set; a 4xx reply or a connection failure is retried
// with backoff, a 5xx is not.
//
// A Slack message is {"text": …} in Slack's mrkdwn, with &, < and >
// escaped so no name can form a link or a mention: one line for a single
// event, or a bold count line and the first [SlackOptions.Listed] events.
// Anything that accepts Slack's incoming-webhook format (Mattermost,
// Rocket.Chat, …) works.
//
// Each sink delivers in order, one message at a time; a slow or failing
// destination holds up only its own queue (which then drops its oldest
// events), never the caller or another sink ([Fanout]).
//
// # Secrets
//
// Webhook secrets, SMTP passwords and webhook and Slack URLs (which often
// carry a token; a Slack URL's path is the credential) are held as
// [Secret], which prints as "[redacted]", and are
// removed from every error and log line the package writes; errors name a
// destination by scheme and host only.
package notify
