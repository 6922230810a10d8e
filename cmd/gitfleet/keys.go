package main

import (
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/artifact/keyfile"
)

func newKeysCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Generate and inspect artifact signing keys",
		Long: `Generate and inspect the keys that sign artifacts.

ECDSA P-256 and RSA keys work with mender-artifact and the Mender client too.
Ed25519 is a Gitfleet extension: mender-artifact 3.9 and stock Mender 3.x
clients can neither make nor check Ed25519 signatures.`,
	}
	cmd.AddCommand(newKeysGenerateCmd(), newKeysPublicCmd(), newKeysFingerprintCmd(), newKeysEncryptCmd())
	return cmd
}

func newKeysGenerateCmd() *cobra.Command {
	var (
		typ, prefix    string
		force, encrypt bool
	)
	cmd := &cobra.Command{
		Use:   "generate [--type ecdsa|rsa|ed25519] [--out PREFIX]",
		Short: "Generate a signing key pair: PREFIX.key and PREFIX.pub",
		Long: `Generate a signing key pair. PREFIX.key is the private key (mode 0600; keep
it secret, it signs artifacts), PREFIX.pub the public key devices and
'gitfleet artifact verify' trust. Prints the key's fingerprint: the SHA-256 of
its PKIX DER encoding, as 'openssl pkey -pubin -outform DER | sha256sum'.

ecdsa (P-256, written as SEC1 "EC PRIVATE KEY") and rsa (3072 bits, PKCS#1)
keys are accepted by mender-artifact 3.9 as well. ed25519 (PKCS#8) is a
Gitfleet extension that mender-artifact 3.9 and stock Mender 3.x clients do
not support.

With --encrypt the private key is written encrypted with a password (from
GITFLEET_KEY_PASSWORD_FILE or GITFLEET_KEY_PASSWORD), in sigstore's format
(the one cosign key files use); signing commands then need the same password.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			alg, err := artifact.ParseAlgorithm(typ)
			if err != nil {
				return fmt.Errorf("--type: %w", err)
			}
			if prefix == "" {
				return errors.New("--out: empty prefix; give a path prefix such as keys/release")
			}
			privPath, pubPath := prefix+".key", prefix+".pub"
			if !force {
				for _, p := range []string{privPath, pubPath} {
					if _, err := os.Lstat(p); err == nil {
						return failed(fmt.Errorf("%s already exists: choose another --out PREFIX, or pass --force to replace it", p))
					}
				}
			}
			priv, pub, err := artifact.GenerateKey(alg)
			if err != nil {
				return failed(fmt.Errorf("generate %s key: %w", alg, err))
			}
			fp, err := fingerprintPEM(pub)
			if err != nil {
				return failed(err)
			}
			if encrypt {
				if priv, err = encryptKey(priv); err != nil {
					return failed(err)
				}
			}
			if err := writeKeyFile(privPath, 0o600, force, priv); err != nil {
				return failed(err)
			}
			if err := writeKeyFile(pubPath, 0o644, force, pub); err != nil {
				return failed(err)
			}
			// The whole sentence on stderr; the bare fingerprint on stdout,
			// for scripts ($(gitfleet keys generate …)).
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (private, keep it secret) and %s (public); %s key fingerprint %s\n", privPath, pubPath, alg, fp)
			_, err = fmt.Fprintln(cmd.OutOrStdout(), fp)
			return err
		},
	}
	cmd.Flags().StringVar(&typ, "type", "ecdsa", "key `TYPE`: ecdsa (P-256), rsa (3072 bits) or ed25519 (Gitfleet extension)")
	cmd.Flags().StringVar(&prefix, "out", "gitfleet", "path `PREFIX` of the files to write: PREFIX.key and PREFIX.pub")
	cmd.Flags().BoolVar(&force, "force", false, "replace existing key files")
	cmd.Flags().BoolVar(&encrypt, "encrypt", false, "encrypt the private key with the password in GITFLEET_KEY_PASSWORD_FILE or GITFLEET_KEY_PASSWORD")
	return cmd
}

// encryptKey encrypts a plain PEM private key with the password from the
// environment.
func encryptKey(priv []byte) ([]byte, error) {
	pw := keyPassword()
	if pw == nil {
		return nil, errors.New("--encrypt: set GITFLEET_KEY_PASSWORD_FILE (a file holding the password) or GITFLEET_KEY_PASSWORD")
	}
	password, err := pw()
	if err != nil {
		return nil, err
	}
	return keyfile.Encrypt(priv, password)
}

func newKeysEncryptCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "encrypt PRIVATE_KEY --out FILE",
		Short: "Write a password-encrypted copy of a private key",
		Long: `Write PRIVATE_KEY (a plain PEM private key) to FILE encrypted with the
password in GITFLEET_KEY_PASSWORD_FILE or GITFLEET_KEY_PASSWORD, in sigstore's
format (the one cosign key files use). Signing with FILE then needs the same
password. Delete the plain key once you have checked the encrypted one signs
('gitfleet keys public FILE').`,
		Args: exactArgs(1, "PRIVATE_KEY: a plain PEM private key file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("--out is required: the file to write the encrypted key to")
			}
			data, err := readKeyFile("", args[0])
			if err != nil {
				return failed(err)
			}
			enc, err := encryptKey(data)
			if err != nil {
				return failed(fmt.Errorf("%s: %w", args[0], err))
			}
			if err := writeKeyFile(out, 0o600, false, enc); err != nil {
				return failed(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (encrypted)\n", out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write (must not exist)")
	return cmd
}

func writeKeyFile(path string, mode os.FileMode, overwrite bool, data []byte) error {
	err := writeFileAtomic(path, mode, overwrite, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists: choose another --out, or pass --force to replace it", path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func newKeysPublicCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "public PRIVATE_KEY",
		Short: "Print the public key (PEM) of a private key",
		Args:  exactArgs(1, "PRIVATE_KEY: a PEM private key file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := readKeyFile("", args[0])
			if err != nil {
				return failed(err)
			}
			pub, err := publicOfPrivate(data)
			if err != nil {
				return failed(fmt.Errorf("%s: %w", args[0], err))
			}
			_, err = cmd.OutOrStdout().Write(pub)
			return err
		},
	}
}

func newKeysFingerprintCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "fingerprint KEY",
		Short: "Print a key's fingerprint (SHA-256 of the PKIX public key)",
		Long: `Print a key's fingerprint: the lowercase hex SHA-256 of the public key's
PKIX DER encoding, as 'gitfleet artifact verify' and 'read' show it. KEY is
a PEM public key, or a private key whose public half is used.`,
		Args: exactArgs(1, "KEY: a PEM key file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := readKeyFile("", args[0])
			if err != nil {
				return failed(err)
			}
			if block, _ := pem.Decode(data); block != nil && strings.Contains(block.Type, "PRIVATE KEY") {
				if data, err = publicOfPrivate(data); err != nil {
					return failed(fmt.Errorf("%s: %w", args[0], err))
				}
			}
			fp, err := fingerprintPEM(data)
			if err != nil {
				return failed(fmt.Errorf("%s: %w", args[0], err))
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), fp)
			return err
		},
	}
}

// publicOfPrivate returns the public key of a PEM private key, plain or
// encrypted (then with the password from the environment).
func publicOfPrivate(priv []byte) ([]byte, error) {
	s, err := keyfile.Load(priv, keyPassword())
	if err != nil {
		return nil, err
	}
	return s.PublicKeyPEM()
}

func fingerprintPEM(pub []byte) (string, error) {
	v, err := artifact.LoadVerifier(pub)
	if err != nil {
		return "", err
	}
	return v.Fingerprint(), nil
}
