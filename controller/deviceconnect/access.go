package deviceconnect

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Grant is what the live commit's Operator manifest lets one operator do
// on one device. The relay asks for it when a session opens and again
// whenever a new commit goes live; a session whose grant is gone (the
// operator removed, the device no longer listed, the manifest expired) is
// ended at once.
type Grant struct {
	Operator string // the Operator manifest's metadata.name
	Commit   string // the live commit that granted it
	// Device is the device's ID (the subject of its token) when the
	// request named it otherwise (by its declared name); empty: the name
	// given is the ID. The relay uses it to find the device's connection.
	Device       string
	Terminal     bool // may open a shell
	FileTransfer bool // may copy files to and from the device
	PortForward  bool // may forward ports to the device
	RecordInput  bool // the operator's typed input is recorded
	// Limits: concurrent sessions of this operator (all devices), of
	// this device (all operators), idle time before a session is closed,
	// and bytes per second through one session (each way). Zero: none.
	OperatorSessions int
	DeviceSessions   int
	IdleTimeout      time.Duration
	BytesPerSecond   int64
	Expires          time.Time // zero: never
}

// Errors an Authorizer returns. The relay answers ErrUnauthenticated with
// 401 and ErrForbidden with 403, with the error's text.
var (
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrForbidden       = errors.New("forbidden")
)

// Authorizer decides who an operator is and what they may do.
type Authorizer interface {
	// Operator authenticates a management request (its bearer token) and
	// returns the operator's name, or an error wrapping
	// ErrUnauthenticated.
	Operator(r *http.Request) (string, error)
	// Grant returns what operator may do on device under the live commit,
	// or an error wrapping ErrForbidden (the operator is unknown or
	// expired, or their manifest does not list the device).
	Grant(ctx context.Context, operator, device string) (Grant, error)
	// Changed is signalled (never closed) whenever a new commit goes
	// live, so that open sessions are checked again.
	Changed() <-chan struct{}
}

// Refusals an Authorizer may return from Grant (they wrap ErrForbidden)
// so that a session it ends is recorded with the right reason: the
// operator is no longer declared (operator-removed), or their manifest
// has expired (expired). Any other refusal is recorded as access-revoked.
var (
	ErrOperatorRemoved = fmt.Errorf("%w: no such operator", ErrForbidden)
	ErrExpired         = fmt.Errorf("%w: the operator's access has expired", ErrForbidden)
)
