package deviceconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unicode/utf8"

	"filippo.io/age"
	"filippo.io/age/armor"

	"github.com/gitfleet/gitfleet/schema"
)

// Redacted is what a secret value is replaced with wherever it is shown.
const Redacted = "<secret>"

// MaxSecret bounds one secret value, from a file or decrypted.
const MaxSecret = 64 << 10

// maxIdentityFile bounds an age identity file.
const maxIdentityFile = 1 << 20

// Options say where Compile finds secret values.
type Options struct {
	// SecretsDir is the controller's secrets directory (gitfleet serve
	// --config-secrets-dir): a secret `file: NAME` is its file NAME.
	// Empty: such secrets cannot be resolved, and a commit that has one
	// is refused.
	SecretsDir string
	// Identities decrypt `age:` secrets (--config-age-identity). None:
	// such secrets cannot be resolved.
	Identities Identities
	// ReadFile, when set, reads the secret file name instead of
	// SecretsDir (tests). The default opens SecretsDir/name through
	// os.Root (no symbolic link out of the directory), accepts regular
	// files only, and reads at most MaxSecret bytes.
	ReadFile func(name string) ([]byte, error)
}

// LogValue logs the secrets directory and how many identities there are.
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(slog.String("secrets_dir", o.SecretsDir), slog.Int("age_identities", len(o.Identities)))
}

// Identities are age identities: private keys. They print, log and
// encode as a count, never as the keys.
type Identities []age.Identity

// LoadIdentities reads an age identity file, as `age-keygen -o FILE`
// writes it (one AGE-SECRET-KEY-1… line per identity; # comments). Like
// ssh with a private key, it refuses a file that its group or others may
// read or write.
func LoadIdentities(path string) (Identities, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("age identity: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("age identity: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("age identity %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("age identity %s is accessible by others (mode %04o): it is a private key; chmod 600 %s", path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxIdentityFile+1))
	if err != nil {
		return nil, fmt.Errorf("age identity: %w", err)
	}
	if len(data) > maxIdentityFile {
		return nil, fmt.Errorf("age identity %s is larger than %d bytes", path, maxIdentityFile)
	}
	// age's errors never quote key material.
	ids, err := age.ParseIdentities(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("age identity %s: %w (want the file `age-keygen -o FILE` writes)", path, err)
	}
	return Identities(ids), nil
}

// Recipients returns the public keys of ids, what secrets are encrypted
// to (`age -a -r RECIPIENT`), one per identity of a known type.
func (ids Identities) Recipients() []string {
	var out []string
	for _, id := range ids {
		switch id := id.(type) {
		case *age.X25519Identity:
			out = append(out, id.Recipient().String())
		case *age.HybridIdentity:
			out = append(out, id.Recipient().String())
		}
	}
	return out
}

func (ids Identities) summary() string { return strconv.Itoa(len(ids)) + " age identities" }

// String returns how many identities there are.
func (ids Identities) String() string { return ids.summary() }

// GoString returns how many identities there are.
func (ids Identities) GoString() string { return ids.summary() }

// Format writes how many identities there are, whatever the verb.
func (ids Identities) Format(f fmt.State, _ rune) { io.WriteString(f, ids.summary()) }

// LogValue logs how many identities there are.
func (ids Identities) LogValue() slog.Value { return slog.IntValue(len(ids)) }

// MarshalJSON encodes how many identities there are.
func (ids Identities) MarshalJSON() ([]byte, error) { return json.Marshal(len(ids)) }

// plaintext is a resolved secret value. It prints, logs and encodes as
// Redacted.
type plaintext string

func (plaintext) String() string               { return Redacted }
func (plaintext) GoString() string             { return Redacted }
func (plaintext) Format(f fmt.State, _ rune)   { io.WriteString(f, Redacted) }
func (plaintext) LogValue() slog.Value         { return slog.StringValue(Redacted) }
func (plaintext) MarshalJSON() ([]byte, error) { return json.Marshal(Redacted) }
func (plaintext) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// resolver resolves the secrets of one commit, each distinct file and
// ciphertext once.
type resolver struct {
	opts  Options
	root  *os.Root
	rerr  error // opening the secrets directory
	files map[string]result
	ages  map[string]result
}

type result struct {
	v   plaintext
	err error
}

func newResolver(opts Options) *resolver {
	r := &resolver{opts: opts, files: make(map[string]result), ages: make(map[string]result)}
	if opts.ReadFile == nil && opts.SecretsDir != "" {
		r.root, r.rerr = os.OpenRoot(opts.SecretsDir)
	}
	return r
}

func (r *resolver) close() {
	if r.root != nil {
		r.root.Close()
	}
}

// resolve returns the value of s, or why it cannot be had and what to do.
func (r *resolver) resolve(s schema.ConfigSecret) (plaintext, error) {
	if s.File != "" {
		res, ok := r.files[s.File]
		if !ok {
			res.v, res.err = r.file(s.File)
			r.files[s.File] = res
		}
		return res.v, res.err
	}
	key := strings.TrimSpace(s.Age)
	res, ok := r.ages[key]
	if !ok {
		res.v, res.err = r.decrypt(key)
		r.ages[key] = res
	}
	return res.v, res.err
}

func (r *resolver) file(name string) (plaintext, error) {
	if err := schema.CheckSecretFileName(name); err != nil {
		return "", err // validate refuses it too
	}
	var data []byte
	var err error
	switch {
	case r.opts.ReadFile != nil:
		data, err = r.opts.ReadFile(name)
	case r.opts.SecretsDir == "":
		return "", fmt.Errorf("the controller has no secrets directory: start gitfleet serve with --config-secrets-dir DIR and put the file %s in DIR", name)
	case r.rerr != nil:
		return "", fmt.Errorf("cannot open --config-secrets-dir %s: %v", r.opts.SecretsDir, unwrapPath(r.rerr))
	default:
		data, err = readRoot(r.root, name)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("no file %s in --config-secrets-dir %s: create it, holding the value", name, r.opts.SecretsDir)
	case err != nil:
		return "", fmt.Errorf("read %s in --config-secrets-dir %s: %v", name, r.opts.SecretsDir, unwrapPath(err))
	}
	return value(data, "file "+name)
}

// readRoot reads the regular file name of root, at most MaxSecret bytes
// (and one more, to tell that the file is larger).
func readRoot(root *os.Root, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	return io.ReadAll(io.LimitReader(f, MaxSecret+2))
}

func (r *resolver) decrypt(armored string) (plaintext, error) {
	if len(r.opts.Identities) == 0 {
		return "", errors.New("cannot decrypt: the controller has no age identity: start gitfleet serve with --config-age-identity FILE (written by age-keygen -o FILE), and encrypt to its recipient (age-keygen -y FILE)")
	}
	if err := schema.CheckAgeArmor(armored); err != nil {
		return "", err // validate refuses it too
	}
	rd, err := age.Decrypt(armor.NewReader(strings.NewReader(armored)), r.opts.Identities...)
	var nomatch *age.NoIdentityMatchError
	switch {
	case errors.As(err, &nomatch):
		rs := r.opts.Identities.Recipients()
		return "", fmt.Errorf("cannot decrypt: no identity matches: the value was encrypted to another recipient; encrypt it again with age -a -r %s", strings.Join(rs, " -r "))
	case err != nil:
		return "", fmt.Errorf("cannot decrypt: %v", err)
	}
	data, err := io.ReadAll(io.LimitReader(rd, MaxSecret+2))
	if err != nil {
		return "", fmt.Errorf("cannot decrypt: %v (the ciphertext is damaged)", err)
	}
	return value(data, "decrypted value")
}

// value checks a secret value and drops one trailing newline.
func value(data []byte, what string) (plaintext, error) {
	if d, ok := bytes.CutSuffix(data, []byte("\r\n")); ok {
		data = d
	} else {
		data = bytes.TrimSuffix(data, []byte("\n"))
	}
	switch {
	case len(data) > MaxSecret:
		return "", fmt.Errorf("%s is larger than %d bytes", what, MaxSecret)
	case !utf8.Valid(data):
		return "", fmt.Errorf("%s is not UTF-8 text (devices receive a JSON string): base64-encode binary values", what)
	}
	return plaintext(data), nil
}

// unwrapPath drops the path of an *fs.PathError, which the messages here
// give in their own words.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
