package gitsource

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// maxVerify bounds how many new commits one fetch verifies. A history that
// needs more (a first fetch with an old SignedSince, a force-push onto an
// unrelated history) is refused with a message saying to move SignedSince.
const maxVerify = 10000

// verifier checks commit signatures against a keyring parsed once.
//
// It does what go-git's (*object.Commit).Verify does (one armored OpenPGP
// signature over the commit encoded without it), but parses the keyring once
// instead of per commit, judges key expiry with the Source's clock, and says
// why a commit fails in words an auditor can act on.
type verifier struct {
	keyring openpgp.EntityList
	now     func() time.Time
}

func newVerifier(armored string, now func() time.Time) (*verifier, error) {
	keyring, err := openpgp.ReadArmoredKeyRing(strings.NewReader(armored))
	if err != nil {
		return nil, fmt.Errorf("gitsource: read TrustedKeys: %w", err)
	}
	if len(keyring) == 0 {
		return nil, errors.New("gitsource: TrustedKeys holds no key")
	}
	return &verifier{keyring: keyring, now: now}, nil
}

// verify returns the fingerprint of the trusted key that signed c, or why c
// is not acceptably signed.
func (v *verifier) verify(c *object.Commit) (fingerprint, reason string) {
	sig := c.PGPSignature
	switch {
	case strings.TrimSpace(sig) == "":
		return "", "not signed"
	case strings.Contains(sig, "-----BEGIN SSH SIGNATURE-----"):
		return "", "signed with an SSH key (only OpenPGP signatures can be trusted)"
	case !strings.Contains(sig, "-----BEGIN PGP SIGNATURE-----"):
		return "", "signed with something other than OpenPGP (only OpenPGP signatures can be trusted)"
	case strings.Count(sig, "-----BEGIN PGP SIGNATURE-----") > 1:
		return "", "signed with more than one signature block"
	}
	encoded := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(encoded); err != nil {
		return "", fmt.Sprintf("unreadable (%v)", err)
	}
	r, err := encoded.Reader()
	if err != nil {
		return "", fmt.Sprintf("unreadable (%v)", err)
	}
	signer, err := openpgp.CheckArmoredDetachedSignature(v.keyring, r, strings.NewReader(sig), &packet.Config{Time: v.now})
	switch {
	case err == nil:
		return fmt.Sprintf("%X", signer.PrimaryKey.Fingerprint), ""
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return "", fmt.Sprintf("signed by key %s, which is not trusted", issuer(sig))
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return "", fmt.Sprintf("signed by trusted key %s, which has expired", issuer(sig))
	case errors.Is(err, pgperrors.ErrSignatureExpired):
		return "", fmt.Sprintf("signed by trusted key %s with a signature that has expired", issuer(sig))
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return "", fmt.Sprintf("signed by trusted key %s, which is revoked", issuer(sig))
	case issuer(sig) == unreadable:
		return "", fmt.Sprintf("signed with an unreadable OpenPGP signature (%v)", err)
	default:
		return "", fmt.Sprintf("signed by key %s, but the signature does not match the commit (%v)", issuer(sig), err)
	}
}

const unreadable = "(unreadable)"

// issuer names the key that made an armored signature: its fingerprint when
// the signature carries one, else its 64-bit key ID.
func issuer(armored string) string {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return unreadable
	}
	p, err := packet.Read(block.Body)
	if err != nil {
		return unreadable
	}
	sig, ok := p.(*packet.Signature)
	switch {
	case !ok:
		return unreadable
	case len(sig.IssuerFingerprint) > 0:
		return fmt.Sprintf("%X", sig.IssuerFingerprint)
	case sig.IssuerKeyId != nil:
		return fmt.Sprintf("%016X", *sig.IssuerKeyId)
	}
	return "(unknown)"
}

// commitReader reads commits; *git.Repository satisfies it.
type commitReader interface {
	CommitObject(plumbing.Hash) (*object.Commit, error)
}

// checkHistory applies the signed-commit rule (see the package
// documentation) to head. known is closed under ancestry: it holds every
// commit accepted before. When known is empty (nothing accepted yet, no
// SignedSince), only head is checked. It returns head's signer.
func (v *verifier) checkHistory(repo commitReader, head *object.Commit, known map[plumbing.Hash]struct{}) (string, *RefusedError, error) {
	headFP, headReason := v.verify(head)
	if _, ok := known[head.Hash]; ok || len(known) == 0 {
		if ok || headReason == "" {
			return headFP, nil, nil
		}
		return "", refusal(head, head, headReason), nil
	}
	var refused *RefusedError
	seen := map[plumbing.Hash]struct{}{}
	stack := []*object.Commit{head}
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := seen[c.Hash]; ok {
			continue
		}
		seen[c.Hash] = struct{}{}
		if len(seen) > maxVerify {
			return "", &RefusedError{Head: head.Hash.String(), Commit: head.Hash.String(),
				Reason: fmt.Sprintf("more than %d new commits to verify; set SignedSince to a reviewed commit closer to the head", maxVerify)}, nil
		}
		reason := headReason
		if c != head {
			_, reason = v.verify(c)
		}
		if reason != "" {
			if refused == nil {
				refused = refusal(head, c, reason)
			} else {
				refused.More++
			}
		}
		// Walk parents in reverse so the first parent is visited first:
		// the first bad commit found is then the newest on the mainline.
		for i := len(c.ParentHashes) - 1; i >= 0; i-- {
			p := c.ParentHashes[i]
			if _, ok := known[p]; ok {
				continue
			}
			if _, ok := seen[p]; ok {
				continue
			}
			pc, err := repo.CommitObject(p)
			if err != nil {
				return "", nil, fmt.Errorf("read commit %s: %w", p, err)
			}
			stack = append(stack, pc)
		}
	}
	if refused != nil {
		return "", refused, nil
	}
	return headFP, nil, nil
}

func refusal(head, c *object.Commit, reason string) *RefusedError {
	return &RefusedError{
		Head:   head.Hash.String(),
		Commit: c.Hash.String(),
		Author: fmt.Sprintf("%s <%s>", c.Author.Name, c.Author.Email),
		Reason: reason,
	}
}

// addAncestors adds from and all its ancestors to known, stopping at commits
// already there (known is closed under ancestry).
func addAncestors(repo commitReader, from plumbing.Hash, known map[plumbing.Hash]struct{}) error {
	stack := []plumbing.Hash{from}
	for len(stack) > 0 {
		h := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := known[h]; ok {
			continue
		}
		c, err := repo.CommitObject(h)
		if err != nil {
			return fmt.Errorf("read commit %s: %w", h, err)
		}
		known[h] = struct{}{}
		for _, p := range c.ParentHashes {
			if _, ok := known[p]; !ok {
				stack = append(stack, p)
			}
		}
	}
	return nil
}
