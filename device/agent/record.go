package agent

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/atomicfile"
)

// StateName names a state of the agent's update state machine. The names
// of the artifact states are those of Mender's update module protocol.
type StateName string

// The states. Idle and Sync are never persisted: without a record the agent
// is idle.
const (
	StateIdle                         StateName = "Idle"
	StateSync                         StateName = "Sync"
	StateDownload                     StateName = "Download"
	StateArtifactInstall              StateName = "ArtifactInstall"
	StateArtifactReboot               StateName = "ArtifactReboot"
	StateArtifactVerifyReboot         StateName = "ArtifactVerifyReboot"
	StateArtifactCommit               StateName = "ArtifactCommit"
	StateArtifactRollback             StateName = "ArtifactRollback"
	StateArtifactRollbackReboot       StateName = "ArtifactRollbackReboot"
	StateArtifactVerifyRollbackReboot StateName = "ArtifactVerifyRollbackReboot"
	StateArtifactFailure              StateName = "ArtifactFailure"
	StateCleanup                      StateName = "Cleanup"
	StateReport                       StateName = "UpdateStatusReport"
)

// Final outcomes of a deployment, as reported to the server.
const (
	StatusSuccess          = "success"
	StatusFailure          = "failure"
	StatusAlreadyInstalled = "already-installed"
	StatusDownloading      = "downloading"
	StatusInstalling       = "installing"
	StatusRebooting        = "rebooting"
)

// recordVersion is the format of the state record; a record of another
// version is refused rather than misread.
const recordVersion = 1

// maxRecordBytes bounds the state record file.
const maxRecordBytes = 4 << 20

// Record is the persisted state of one deployment in progress: the state
// the agent is in (or about to enter), and everything needed to carry on
// from there after a crash, a power cut or a reboot. It is written
// atomically before every transition; no record means Idle.
type Record struct {
	Version int       `json:"version"`
	State   StateName `json:"state"`
	// Deployment is what the server (or the command line) asked for.
	Deployment Deployment `json:"deployment"`
	// Header is the verified artifact header, once Download has read it:
	// installers made after a restart need it.
	Header *HeaderRecord `json:"header,omitempty"`
	// Provides is what the device provides once this artifact is committed
	// (computed in Download: the old provides, minus the artifact's
	// clears_artifact_provides, plus its provides).
	Provides map[string]string `json:"provides,omitempty"`
	// Reboot is the combined NeedsArtifactReboot answer ("No", "Yes",
	// "Automatic"), asked once after ArtifactInstall.
	Reboot string `json:"reboot,omitempty"`

	// Installed: ArtifactInstall was entered, so a failure must roll back.
	Installed bool `json:"installed,omitempty"`
	// Committed: ArtifactCommit finished; the outcome is success.
	Committed bool `json:"committed,omitempty"`
	// Status is the outcome to report, set when it is known.
	Status string `json:"status,omitempty"`
	// Error is the first error of the deployment; it leads the log.
	Error string `json:"error,omitempty"`
	// Aborted: the server answered 409 to a status report. Nothing more is
	// reported for this deployment.
	Aborted bool `json:"aborted,omitempty"`

	// Attempts counts the entries into State (reset on every transition to
	// another state): a state that is entered again and again because the
	// agent dies in it is given up.
	Attempts int `json:"attempts"`
	// Boots counts the agent's starts in the new software before it was
	// committed; past MaxBootCount the update is rolled back.
	Boots int `json:"boots,omitempty"`
	// Transitions counts every record written for this deployment; past
	// maxTransitions the agent is in a state loop and stops the deployment.
	Transitions int `json:"transitions"`

	// BootID is the boot the reboot states were entered in: finding the
	// record in such a state within the same boot means the reboot never
	// happened (the agent alone was restarted).
	BootID string `json:"boot_id,omitempty"`
	// RollbackReboots counts reboots into the old software.
	RollbackReboots int `json:"rollback_reboots,omitempty"`

	Started time.Time `json:"started"`
	Updated time.Time `json:"updated"`
}

// Deployment is one deployment: the server's, or a standalone install.
type Deployment struct {
	// ID is the server's deployment ID; empty for a standalone install.
	ID           string `json:"id,omitempty"`
	ArtifactName string `json:"artifact_name,omitempty"`
	// URI is where the artifact is read from: the presigned URL, or a file
	// path or URL given on the command line.
	URI string `json:"uri"`
	// Expire is when a presigned URI stops working (informational).
	Expire string `json:"expire,omitempty"`
}

// Standalone reports whether no server is involved.
func (d Deployment) Standalone() bool { return d.ID == "" }

// HeaderRecord is the part of a verified artifact header that installers
// made after a restart need.
type HeaderRecord struct {
	Info     artifact.HeaderInfo `json:"info"`
	Payloads []PayloadRecord     `json:"payloads"`
}

// PayloadRecord is one payload of a HeaderRecord.
type PayloadRecord struct {
	Type     string            `json:"type"`
	TypeInfo artifact.TypeInfo `json:"type_info"`
	MetaData map[string]any    `json:"meta_data,omitempty"`
	Files    []FileRecord      `json:"files,omitempty"`
}

// FileRecord is one payload file of a PayloadRecord.
type FileRecord struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

func recordHeader(h *artifact.Header) *HeaderRecord {
	hr := &HeaderRecord{Info: h.Info}
	for _, p := range h.Payloads {
		pr := PayloadRecord{Type: p.Type, TypeInfo: p.TypeInfo, MetaData: p.MetaData}
		for _, f := range p.Files {
			pr.Files = append(pr.Files, FileRecord{Name: f.Name, SHA256: hex.EncodeToString(f.Digest[:])})
		}
		hr.Payloads = append(hr.Payloads, pr)
	}
	return hr
}

// artifactHeader rebuilds the header (without state scripts, which the
// script runner stored in Download).
func (hr *HeaderRecord) artifactHeader() (*artifact.Header, error) {
	h := &artifact.Header{Info: hr.Info}
	for i, pr := range hr.Payloads {
		p := artifact.Payload{Index: i, Type: pr.Type, TypeInfo: pr.TypeInfo, MetaData: pr.MetaData}
		for _, fr := range pr.Files {
			var d artifact.Digest
			b, err := hex.DecodeString(fr.SHA256)
			if err != nil || len(b) != len(d) {
				return nil, fmt.Errorf("%w: payload %d file %q: bad digest", ErrRecord, i, fr.Name)
			}
			copy(d[:], b)
			p.Files = append(p.Files, artifact.FileInfo{Name: fr.Name, Digest: d})
		}
		h.Payloads = append(h.Payloads, p)
	}
	return h, nil
}

// ErrRecord marks a state record the agent cannot read.
var ErrRecord = errors.New("agent: unreadable state record")

// Records keeps the state record in a file.
type Records struct {
	path string
}

// NewRecords returns the record store at path.
func NewRecords(path string) *Records { return &Records{path: path} }

// Load returns the record, or nil (Idle) when there is none.
func (s *Records) Load() (*Record, error) {
	b, err := readFileBounded(s.path, maxRecordBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state record: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRecord, s.path, err)
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("%w: %s: version %d (this agent reads %d)", ErrRecord, s.path, r.Version, recordVersion)
	}
	if !knownState[r.State] {
		return nil, fmt.Errorf("%w: %s: unknown state %q", ErrRecord, s.path, r.State)
	}
	return &r, nil
}

// Save writes r atomically: after a power cut the file holds the previous
// record or this one.
func (s *Records) Save(r *Record) error {
	r.Version = recordVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("state record: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o700); err != nil {
		return fmt.Errorf("state record: %w", err)
	}
	if err := atomicfile.WriteFile(s.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("state record: %w", err)
	}
	return nil
}

// Clear removes the record: the agent is idle.
func (s *Records) Clear() error {
	if err := atomicfile.Remove(s.path); err != nil {
		return fmt.Errorf("state record: %w", err)
	}
	return nil
}

var knownState = map[StateName]bool{
	StateDownload: true, StateArtifactInstall: true, StateArtifactReboot: true,
	StateArtifactVerifyReboot: true, StateArtifactCommit: true, StateArtifactRollback: true,
	StateArtifactRollbackReboot: true, StateArtifactVerifyRollbackReboot: true,
	StateArtifactFailure: true, StateCleanup: true, StateReport: true,
}
