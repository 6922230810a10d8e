package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func newOperatorsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operators",
		Short: "Make credentials for Operator manifests",
		Long: `Make the credentials operators use for remote terminal, file transfer and
port forwarding. Who may do what is declared by Operator manifests in the
fleet repository; see docs/operators.md.`,
	}
	cmd.AddCommand(newOperatorsTokenCmd())
	return cmd
}

// tokenBytes is the entropy of a personal access token: enough that its
// SHA-256 in Git cannot be searched back to it.
const tokenBytes = 32

func newOperatorsTokenCmd() *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "token --out FILE",
		Short: "Generate a personal access token and the tokenSHA256 line for its Operator manifest",
		Long: `Generate a personal access token (256 random bits) and write it to FILE
(mode 0600; give it to the operator, keep it out of Git). Prints the line to
put in the operator's manifest:

  tokenSHA256: <the token's SHA-256>

The operator then uses the token with mender-cli ('--token-value', or
'mender-cli login --username NAME --password TOKEN') or 'gitfleet login'.
A token chosen by hand may be guessable from its hash, which anyone who can
read the repository sees; a generated one is not.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("--out is required: the file to write the token to (it is a secret: not in the fleet repository)")
			}
			raw := make([]byte, tokenBytes)
			if _, err := rand.Read(raw); err != nil {
				return failed(fmt.Errorf("random token: %w", err))
			}
			token := "gfp_" + base64.RawURLEncoding.EncodeToString(raw)
			if err := writeKeyFile(out, 0o600, force, []byte(token+"\n")); err != nil {
				return failed(err)
			}
			sum := sha256.Sum256([]byte(token))
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote the token to %s (secret: give it to the operator); put this line in their Operator manifest's spec:\n", out)
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "tokenSHA256: %s\n", hex.EncodeToString(sum[:]))
			return err
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "`FILE` to write the token to (mode 0600; must not exist unless --force)")
	cmd.Flags().BoolVar(&force, "force", false, "replace FILE")
	return cmd
}
