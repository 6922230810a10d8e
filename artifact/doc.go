// Package artifact reads, writes, signs and verifies Mender Artifacts
// (format version 3), so that artifacts built by mender-artifact or Yocto's
// meta-mender deploy through Gitfleet unchanged, and artifacts Gitfleet
// builds install on stock Mender clients.
//
// # The format
//
// An artifact is an uncompressed tar archive whose entries come in a fixed
// order:
//
//	version                  {"format":"mender","version":3}
//	manifest                 "sha256  name" lines: version, header, every payload file
//	manifest.sig             optional: base64 signature of manifest
//	manifest-augment         optional: digests that are not signed (delta updates)
//	header.tar[.gz|.xz|.zst] header-info, scripts/*, headers/NNNN/{type-info,meta-data}
//	header-augment.tar[...]  optional, digest listed in manifest-augment
//	data/NNNN.tar[...]       one tar of files per payload, in payload order
//
// Trust flows from the signature to the manifest and from the manifest to
// everything else: the manifest lists the sha256 of version, of the
// (compressed) header archive, and of every payload file. A Reader therefore
// checks the signature before it believes the manifest, checks the header's
// digest before it returns the header, and checks each payload file's digest
// as the file is read, so a caller that streams a payload somewhere (a
// partition, a file) learns of tampering no later than the file's last byte.
//
// The signature covers every byte that can run only if nothing is augmented:
// manifest-augment (and the header-augment and payload files it lists) is
// outside it. With Verifiers, or ReaderOptions.RequireCovered, a Reader
// refuses any augmented artifact with ErrAugmented; [Header.Covered] is the
// same rule for callers that check signatures themselves.
//
// # Streaming and limits
//
// Nothing is buffered whole except the small parts that must be: version,
// manifest and signature, and the parsed header. Payload files are streams;
// memory does not grow with artifact size. Every part that is held in memory
// has a documented bound (see [Limits]); input past a bound is an error, not an
// allocation.
//
// # Signatures
//
// Signatures are made and checked with the standard library's crypto/ecdsa,
// crypto/rsa and crypto/ed25519 alone: the device agent links this package
// for its Reader, and sigstore's signature package added 2 MB (its protobuf
// types) to the agent's binary. The encodings are those of mender-artifact: RSA PKCS#1
// v1.5 over SHA-256, and ECDSA P-256 over SHA-256 stored as raw r‖s (64
// bytes) rather than the ASN.1 that crypto/ecdsa produces; the conversion
// happens here, at the edge.
// Ed25519 (pure Ed25519 over the manifest bytes, 64-byte signature) is a
// Gitfleet extension: mender-artifact 3.9 can neither make nor check it.
//
// Private keys are read from PEM in PKCS#8, SEC1 ("EC PRIVATE KEY") or PKCS#1
// ("RSA PRIVATE KEY"); public keys from PKIX or PKCS#1 PEM. Keys made by
// [GenerateKey] use SEC1 for ECDSA and PKCS#1 for RSA so that mender-artifact,
// which refuses PKCS#8, can use them too.
package artifact
