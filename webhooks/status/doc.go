// Package status writes the progress of Gitfleet's rollouts back to Git as
// commit statuses, the way Flux's notification-controller does: the commit
// that started or changed a rollout shows "pending" while it runs, then
// "success" when it completes or "failure" when it aborts, with a short
// description (what happened, the device counts) and a link.
//
// A [Client] speaks to one repository on one host through the host's
// documented API:
//
//   - GitHub (and GitHub Enterprise Server):
//     POST {url}/repos/{owner}/{repo}/statuses/{sha}, with
//     "Authorization: Bearer TOKEN" and "Accept: application/vnd.github+json";
//     body {state, target_url, description, context}; states pending,
//     success, failure, error.
//   - GitLab: POST {url}/api/v4/projects/{id or URL-encoded path}/statuses/{sha},
//     with "PRIVATE-TOKEN: TOKEN"; body {state, name, target_url,
//     description}; states pending, running, success, failed, canceled.
//     A rollout in progress is "running". GitLab refuses to set a state a
//     status already has (HTTP 400 "Cannot transition status via :run
//     from :running"); that answer means the status is already what was
//     asked, so it counts as done (the description then stays the first
//     one's).
//   - Gitea and Forgejo: POST {url}/api/v1/repos/{owner}/{repo}/statuses/{sha},
//     with "Authorization: token TOKEN"; body {state, target_url,
//     description, context}; states pending, success, error, failure,
//     warning.
//
// Descriptions are cut to 140 characters (GitHub's limit, the smallest).
// A request that fails with a network error, 408, 429 or 5xx (or GitHub's
// 403 of a rate limit, which carries Retry-After or
// X-RateLimit-Remaining: 0) is retried with the backoff of the
// notification webhooks ([notify.Retry]); any other answer (401 a bad
// token, 403 no permission, 404 no such repository or commit, 422 …) is
// final: it is returned as an [*HTTPError] with a hint, and the [Sink]
// keeps it as its [Sink.Problem] until a status goes through. The token
// travels only in its header; it is never logged nor part of an error.
//
// [Sink] is a [notify.Sink]: it turns rollout events into statuses
// ([FromEvent]) and sets them one at a time, in order, from its own queue.
package status
