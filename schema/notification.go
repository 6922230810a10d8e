package schema

// A Notification is where events go: a signed webhook or e-mail.
type Notification struct {
	Meta
	Spec NotificationSpec
}

// The events a Notification may subscribe to.
const (
	EventRolloutStarted          = "rollout.started"
	EventRolloutPhaseOpened      = "rollout.phase_opened"
	EventRolloutPhaseCompleted   = "rollout.phase_completed"
	EventRolloutAwaitingApproval = "rollout.awaiting_approval"
	EventRolloutPaused           = "rollout.paused"
	EventRolloutAborted          = "rollout.aborted"
	EventRolloutCompleted        = "rollout.completed"
	EventAlertRaised             = "alert.raised"
	EventAlertCleared            = "alert.cleared"
	EventDevicePending           = "device.pending"
	EventCommitRefused           = "commit.refused"
)

// Events lists every event name.
func Events() []string {
	return []string{
		EventRolloutStarted, EventRolloutPhaseOpened, EventRolloutPhaseCompleted,
		EventRolloutAwaitingApproval, EventRolloutPaused, EventRolloutAborted,
		EventRolloutCompleted, EventAlertRaised, EventAlertCleared,
		EventDevicePending, EventCommitRefused,
	}
}

// NotificationSpec is the spec of a [Notification]. Exactly one of Webhook
// and Email is set.
type NotificationSpec struct {
	Webhook *Webhook `json:"webhook,omitempty"`
	Email   *Email   `json:"email,omitempty"`

	// Events are the event names sent; empty means all of them.
	Events []string `json:"events,omitempty"`

	// Rollouts and Checks, when set, narrow rollout events to those
	// Rollouts and alert events to those MonitorChecks.
	Rollouts []string `json:"rollouts,omitempty"`
	Checks   []string `json:"checks,omitempty"`
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
