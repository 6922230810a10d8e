package notifier

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gitfleet/gitfleet/schema"
	"github.com/gitfleet/gitfleet/webhooks/notify"
)

// ErrSecret is wrapped by every error of [Secrets.Resolve].
var ErrSecret = errors.New("notifier: secret not available")

// MaxSecretFile bounds a secret file.
const MaxSecretFile = 64 << 10

// Secrets resolves the secret references of Notification manifests on the
// controller's machine. The zero value reads the process environment and
// the file system.
type Secrets struct {
	// LookupEnv reads an environment variable. Default os.LookupEnv.
	LookupEnv func(name string) (string, bool)
	// Open opens a file. Default os.Open.
	Open func(name string) (io.ReadCloser, error)
}

// Resolve returns the secret ref names: the environment variable's value,
// or the file's content (at most [MaxSecretFile] bytes), with surrounding
// white space trimmed. An unset or empty variable, a missing, unreadable,
// oversized or empty file, and a reference naming both or neither are
// errors wrapping [ErrSecret]; they name the variable or file, never a
// value.
func (s Secrets) Resolve(ref schema.SecretRef) (notify.Secret, error) {
	switch {
	case ref.Env != "" && ref.File != "":
		return "", fmt.Errorf("%w: the reference names both env %q and file %q; keep one", ErrSecret, ref.Env, ref.File)
	case ref.Env != "":
		lookup := s.LookupEnv
		if lookup == nil {
			lookup = os.LookupEnv
		}
		v, ok := lookup(ref.Env)
		v = strings.TrimSpace(v)
		if !ok || v == "" {
			return "", fmt.Errorf("%w: environment variable %s is not set (or empty) in the controller's environment", ErrSecret, ref.Env)
		}
		return notify.Secret(v), nil
	case ref.File != "":
		open := s.Open
		if open == nil {
			open = func(name string) (io.ReadCloser, error) { return os.Open(name) }
		}
		f, err := open(ref.File)
		if err != nil {
			return "", fmt.Errorf("%w: file %s on the controller: %w", ErrSecret, ref.File, cause(err))
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, MaxSecretFile+1))
		switch {
		case err != nil:
			return "", fmt.Errorf("%w: read file %s on the controller: %w", ErrSecret, ref.File, cause(err))
		case len(b) > MaxSecretFile:
			return "", fmt.Errorf("%w: file %s is larger than %d bytes; it should hold only the secret", ErrSecret, ref.File, MaxSecretFile)
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			return "", fmt.Errorf("%w: file %s on the controller is empty", ErrSecret, ref.File)
		}
		return notify.Secret(v), nil
	}
	return "", fmt.Errorf("%w: the reference names neither env nor file", ErrSecret)
}

// cause drops the path from an *os.PathError (the message names it
// already).
func cause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
