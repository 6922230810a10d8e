package schema

import "slices"

// A Notification is where events go: a signed webhook, e-mail, a
// Slack-compatible incoming webhook, or commit statuses on the Git host.
type Notification struct {
	Meta
	Spec NotificationSpec
}

// The events the controller emits, which a Notification may subscribe to.
// The schema's #Event (notification.cue) is the same list; a test keeps
// the two equal.
const (
	// EventCommitLive: a commit went live (every go-live, a rewind to an
	// older commit included).
	EventCommitLive = "commit.live"
	// EventCommitRefused: a commit failed validation or a deny policy;
	// the previous commit stays live.
	EventCommitRefused = "commit.refused"
	// EventCommitRewound: the commit that went live does not descend
	// from the previous live commit: the branch was moved back to an
	// older commit or force-pushed. A commit.live for the same commit
	// follows.
	EventCommitRewound = "commit.rewound"
	// EventRolloutStarted: a rollout is new (or declared again after it
	// was removed) and starts a generation.
	EventRolloutStarted = "rollout.started"
	// EventRolloutArtifact: a rollout's artifact changed, which starts a
	// new generation.
	EventRolloutArtifact = "rollout.artifact"
	// EventRolloutSettings: a rollout's settings (phases, windows, …)
	// changed within its generation.
	EventRolloutSettings = "rollout.settings"
	// EventRolloutStopped: a rollout is no longer declared in Git.
	EventRolloutStopped = "rollout.stopped"
	// EventRolloutPhaseOpened: a phase of a rollout generation admitted
	// its first device.
	EventRolloutPhaseOpened = "rollout.phase_opened"
	// EventRolloutPhaseCompleted: a phase of a rollout generation
	// completed (its devices finished; the next phase may open after the
	// hold).
	EventRolloutPhaseCompleted = "rollout.phase_completed"
	// EventRolloutAwaitingApproval: a device would be admitted into a
	// phase that requires approval and is not in approvedPhases.
	EventRolloutAwaitingApproval = "rollout.awaiting_approval"
	// EventRolloutPaused: a device asked for an update from a rollout
	// that is paused (spec.paused): nobody new is admitted.
	EventRolloutPaused = "rollout.paused"
	// EventRolloutAborted: an abort criterion fired; the generation
	// admits no one and devices roll back.
	EventRolloutAborted = "rollout.aborted"
	// EventRolloutCompleted: the last phase of a generation completed.
	EventRolloutCompleted = "rollout.completed"
	// EventArtifactRefused: the controller refuses a rollout's artifact
	// (a check failed: its digest, signature, signer or size); the
	// rollout admits nobody until a commit fixes it.
	EventArtifactRefused = "artifact.refused"
	// EventAlertRaised and EventAlertCleared: a MonitorCheck's alert
	// opened or closed on a device.
	EventAlertRaised  = "alert.raised"
	EventAlertCleared = "alert.cleared"
	// EventDevicePending: a device the live commit does not declare asked
	// to authenticate for the first time (a new pending record).
	EventDevicePending = "device.pending"
	// EventDeviceRefused: a device presenting a client certificate was
	// refused (revoked serial, another CA, a key or identity that is not
	// the certificate's).
	EventDeviceRefused = "device.refused"
	// EventSessionStarted: an operator opened a remote session
	// (terminal, file transfer, port forwarding) to a device.
	EventSessionStarted = "session.started"
	// EventSessionEnded: a remote session ended (closed, idle, the
	// operator's access revoked, the device gone, …).
	EventSessionEnded = "session.ended"
	// EventSessionRefused: an operator was refused a remote session (the
	// live commit does not grant it, or a limit was reached).
	EventSessionRefused = "session.refused"
)

// events is #Event, in its order.
var events = []string{
	EventCommitLive, EventCommitRefused, EventCommitRewound,
	EventRolloutStarted, EventRolloutArtifact, EventRolloutSettings, EventRolloutStopped,
	EventRolloutPhaseOpened, EventRolloutPhaseCompleted, EventRolloutAwaitingApproval,
	EventRolloutPaused, EventRolloutAborted, EventRolloutCompleted, EventArtifactRefused,
	EventAlertRaised, EventAlertCleared, EventDevicePending, EventDeviceRefused,
	EventSessionStarted, EventSessionEnded, EventSessionRefused,
}

// Events lists every event name, in the order of the schema's #Event.
func Events() []string { return slices.Clone(events) }

// IsEvent reports whether name is one of [Events].
func IsEvent(name string) bool { return slices.Contains(events, name) }

// NotificationSpec is the spec of a [Notification]. Exactly one of
// Webhook, Email, Slack and GitStatus is set.
type NotificationSpec struct {
	Webhook   *Webhook   `json:"webhook,omitempty"`
	Email     *Email     `json:"email,omitempty"`
	Slack     *Slack     `json:"slack,omitempty"`
	GitStatus *GitStatus `json:"gitStatus,omitempty"`

	// Events are the event names sent; empty means all of them.
	Events []string `json:"events,omitempty"`

	// Rollouts and Checks, when set, narrow rollout events to those
	// Rollouts and alert events to those MonitorChecks.
	Rollouts []string `json:"rollouts,omitempty"`
	Checks   []string `json:"checks,omitempty"`
}

// Sink returns the name of the sink field that is set ("webhook",
// "email", "slack" or "gitStatus"), or "" when none is.
func (s *NotificationSpec) Sink() string {
	switch {
	case s.Webhook != nil:
		return "webhook"
	case s.Email != nil:
		return "email"
	case s.Slack != nil:
		return "slack"
	case s.GitStatus != nil:
		return "gitStatus"
	}
	return ""
}

// MarshalJSON encodes n in the shape of its manifest.
func (n Notification) MarshalJSON() ([]byte, error) { return marshal(&n.Meta, &n.Spec) }

// A Webhook posts each event as JSON to URL (https), signed with HMAC-SHA256
// under the secret Secret refers to.
type Webhook struct {
	URL    string    `json:"url"`
	Secret SecretRef `json:"secret,omitzero"`
}

// A SecretRef names a secret held by the controller, never in Git: an
// environment variable or a file on the controller's machine. Exactly one
// field is set.
type SecretRef struct {
	Env  string `json:"env,omitempty"`
	File string `json:"file,omitempty"`
}

// An Email sends each event to the addresses To, through the SMTP server
// the controller is configured with.
type Email struct {
	To []string `json:"to"`
}

// A Slack posts events to a Slack-compatible incoming webhook (Slack,
// Mattermost, Rocket.Chat, …). Its URL is the credential, so it is a
// secret held by the controller.
type Slack struct {
	URL SecretRef `json:"url"`
}

// The Git hosts a [GitStatus] sink speaks to.
const (
	GitHub = "github" // GitHub and GitHub Enterprise Server (REST API)
	GitLab = "gitlab" // GitLab (REST API v4)
	Gitea  = "gitea"  // Gitea and Forgejo (API v1)
)

// A GitStatus sets a commit status on the commit that started or changed
// a rollout, through the Git host's API: pending while the rollout runs,
// success when it completes, failure when it aborts.
type GitStatus struct {
	// Provider is GitHub, GitLab or Gitea (Forgejo too).
	Provider string `json:"provider"`
	// URL is the host's API address, https: https://api.github.com (or
	// https://HOST/api/v3 for GitHub Enterprise Server), or the GitLab,
	// Gitea or Forgejo instance, such as https://gitlab.com.
	URL string `json:"url"`
	// Repository is owner/name; on GitLab a project path (groups
	// included) or the project's numeric ID.
	Repository string `json:"repository"`
	// Token is an API token allowed to set commit statuses, held by the
	// controller.
	Token SecretRef `json:"token"`
}
