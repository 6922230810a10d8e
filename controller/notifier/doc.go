// Package notifier connects the controller to package webhooks/notify: it
// turns the Notification manifests of the live commit into sinks, and the
// controller's events into notifications.
//
// # The model
//
// A [Notifier] holds one sink per Notification manifest of the live
// commit (a signed webhook, an e-mail digest, a Slack-compatible message
// or commit statuses on the Git host, package webhooks/status), each with the manifest's filter (events, rollouts, checks).
// [Notifier.Configure] rebuilds them from a new live commit: a manifest
// whose settings, secrets included, did not change keeps its sink and its
// queue; a changed or removed one gets a new sink (or none), and the old
// one delivers what it holds in the background.
//
// A manifest that cannot be carried out is not fatal: the commit is live
// anyway (Git says what the fleet should be; a notification is a report
// about it). A secret reference that does not resolve (an unset
// environment variable, a missing or empty file) and an e-mail
// Notification on a controller without an SMTP server are logged at every
// Configure, listed by [Notifier.Problems] and counted by the
// gitfleet_notification_problems gauge. /readyz does not change: the
// controller still serves devices.
//
// Events reach the Notifier two ways:
//
//   - through the event log: [EventLog] wraps the store's event log, and an
//     event appended for the first time (AppendEvent's added result, true
//     on exactly one replica) is notified by that replica, so that every
//     notification goes out once however many controllers share the
//     store. Only kinds of the schema's #Event list are notified.
//   - directly, for alerts: [Notifier.Alert] notifies an alert record that
//     opened or closed. Alerts do not go to the event log, so that a storm
//     of them cannot push the commit and rollout history out of it; the
//     device API calls Alert on the replica that recorded the change.
//
// Notifying never blocks and never fails the caller: each sink has its own
// bounded queue and goroutine (see package webhooks/notify).
//
// # Secrets
//
// Webhook signing secrets, Slack URLs and Git host tokens are
// [schema.SecretRef]s resolved
// on the controller at each Configure: an environment variable of the
// controller process, or a file on its machine (at most 64 KiB,
// surrounding white space trimmed). Rotating a secret file takes effect
// at the next commit that goes live (or a restart).
package notifier
