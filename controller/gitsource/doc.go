// Package gitsource follows one branch (or tag) of a fleet repository and
// hands the controller each new commit as a [Revision]: its SHA, author,
// message, signer, and a read-only [fs.FS] over its tree.
//
// # Model
//
// A [Source] keeps a bare clone of the remote in a local directory
// ([Options.Dir]); the directory survives restarts, so after the first clone
// every fetch downloads only new objects. [Source.Fetch] fetches the followed
// ref, resolves it to a commit and decides whether that commit may be served.
// [Source.Run] calls Fetch on a timer and whenever a webhook fires, and calls
// back with each new revision. Nothing is ever checked out: the controller
// reads commits through [CommitFS], so what it serves is exactly what Git
// recorded (uncommitted files, ignored files and .git are invisible, and
// symbolic links are never followed).
//
// A fetch ends in one of three ways, and each says what happens next (as in
// Flux's source-controller):
//
//   - a Revision: the head is served; Fetch is cheap and returns the same
//     Revision while the head does not move.
//   - an [*UnreachableError] (errors.Is(err, [ErrUnreachable])): the remote
//     could not be read (network, timeout, TLS, host key, credentials, missing
//     ref). This is transient: the previous Revision stays live and Run retries
//     with exponential backoff until the remote answers.
//   - a [*RefusedError] (errors.Is(err, [ErrRefused])): the remote answered,
//     but its head must not be served (see signed commits below). This is
//     stalled: retrying the same commit cannot help, so Run waits for the
//     next commit (poll or webhook) and the previous Revision stays live.
//
// Validation of the manifests happens later, in the controller, which
// treats a commit it refuses the same way: the previous revision stays live
// until a new commit arrives.
//
// # Signed commits
//
// With [Options.TrustedKeys] set, a head is served only when every commit in
// its history that this Source has not accepted before carries a valid
// OpenPGP signature by one of the trusted keys. "Accepted before" means: an
// ancestor of (or equal to) a commit this Source once served, or of the
// commit named by [Options.SignedSince]. So:
//
//   - a fast-forward checks exactly the new commits, merged side branches
//     included (so GitHub's web-flow key must be trusted if pull requests are
//     merged in the web UI);
//   - an unsigned or wrongly signed commit blocks the branch, and a good
//     signed commit on top of it does not unblock it: the bad commit is still
//     in the history that would be served. An auditor reading the history
//     wants every change it contains to be attributable to a trusted key, and a
//     signature on a later commit does not say who wrote the earlier one. The
//     way out is to rewrite the branch without the bad commit (force-push),
//     or, when the bad commit has been reviewed out of band, to set
//     SignedSince to it, which is itself a recorded configuration change;
//   - a force-push checks every commit that is new relative to what was
//     accepted; moving the branch back to an accepted commit needs no new
//     signature;
//   - the first fetch, with no SignedSince and nothing accepted yet, checks
//     only the head (trust on first use of the history below it). The last
//     accepted commit is kept in the clone as refs/gitfleet/accepted, so a
//     restart with the same Dir continues where it stopped.
//
// Expiry and revocation of the trusted keys are judged at fetch time, with
// the Source's clock. Removing a key from TrustedKeys does not un-accept
// commits accepted before; it refuses new commits signed by it. SSH and X.509 commit signatures are refused with a
// message saying so.
//
// # Secrets
//
// Credentials live in [Auth], whose String, GoString and LogValue methods
// redact them. Credentials written into the URL are moved into Auth and
// removed from the URL, and error messages never contain a secret.
package gitsource
