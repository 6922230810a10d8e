// Package artifacts fetches, verifies and caches the artifacts a fleet
// declares, and serves them to devices through short-lived presigned URLs.
//
// # The model
//
// An Artifact manifest in the fleet repository names a source and what the
// artifact must be: its sha256, its artifact_name, the device types it is
// for, its provides and depends, and which SigningKeys must have signed it.
// Artifacts are large binaries and are not kept in Git. A source is either
//
//   - a slash-separated path relative to the artifact store
//     ([Options].StoreDir): a plain directory on the controller's machine (a
//     mounted volume, an rsync target, a CI upload directory). The fleet
//     repository's checkout is never used as the store. Paths and symlinks
//     that lead out of the store are refused. When the manifest gives no
//     sha256, a sha256sum-style SOURCE.sha256 beside the file is checked
//     if present; otherwise the file's own digest is taken; or
//   - an https URL (an object store, a release server). Its sha256 is
//     required, so the bytes are pinned by the reviewed commit.
//
// The [Cache] copies each source into its own directory ([Options].Dir),
// content-addressed as Dir/sha256/<hex>: two manifests that point at the
// same bits share one file, and a source whose bytes change becomes a new
// file and a new [Entry]. A copy is written to Dir/tmp under a temporary
// name, hashed as it is written, fsynced, checked against the declared
// sha256 and only then renamed into place, so a half-written or wrong file
// is never visible under a digest. A failed https download keeps its
// partial file (Dir/tmp/<hex>.part) and resumes with a Range request on the
// next attempt.
//
// Every artifact then goes through the same ordered checks, stopped at the
// first failure:
//
//  1. keys: every name in spec.signedBy is a SigningKey of the fleet whose
//     public key loads ([ErrKey]);
//  2. fetch: the source exists, is at most [Options].MaxSize bytes
//     ([ErrSource], [ErrTooLarge]) and its sha256 is the declared one
//     ([ErrDigest]);
//  3. read: the whole file is a well-formed Mender Artifact v3 whose
//     manifest digests all match, read by package artifact ([ErrFormat]).
//     This happens once per digest;
//  4. header: artifact_name equals the manifest's artifactName (default
//     metadata.name), every deviceTypes entry is among the header's
//     device_type, and every provides/depends the manifest states is what
//     the header says ([ErrHeader]). What the Entry records — provides,
//     depends, payload types — comes from the header, never the manifest;
//  5. signatures: at least spec.minSignatures of the spec.signedBy keys
//     signed the artifact's manifest ([ErrUnsigned], [ErrSignature]).
//
// An artifact that fails a check is never offered: [Cache.Lookup] returns
// an [*Error] that says which check failed and why, [Cache.Status] lists
// every artifact with its state, and the download handler refuses its
// digest. Fetch failures (a missing file, a network error, a short or wrong
// download) are retried by later syncs, downloads with exponential
// backoff. The other checks are deterministic for a given file; their
// results are memoized per digest (a restarted controller reads each cached
// file once more) and re-evaluated cheaply whenever the manifest, the keys
// or the file change.
//
// The controller calls [Cache.Sync] with every new snapshot and also on a
// timer (a minute is fine): that is when a file added to the store after
// its manifest was committed is picked up, and when failed downloads are
// retried. A Sync with nothing to do costs a stat per store artifact: a
// store file is copied and hashed again only when its size or modification
// time changes.
//
// # More than one signature
//
// A Mender Artifact carries a single manifest.sig, so spec.minSignatures
// above 1 cannot be met by the artifact alone. Gitfleet's extension is a
// detached signature file next to the source: SOURCE.sigs (for a store
// path, the file beside it; for an https source, the same URL with ".sigs"
// appended to its path). It holds one signature per line, each in
// manifest.sig's encoding (base64, ECDSA as raw r‖s) over the artifact's
// manifest entry — the same bytes manifest.sig signs — so the artifact file
// itself is unchanged and stock clients still see one signature. Blank
// lines and lines starting with # are ignored. [SignDetached] makes such a
// line. Each trusted key counts once, whether its signature is embedded or
// detached. Without the file, an artifact that needs two signatures fails
// with [ErrSignature] and a message saying how many were found and where
// to add the rest. Devices still check only the embedded signature with
// their own key; the multi-signature rule is the controller's gate.
//
// # Presigned downloads
//
// Devices fetch artifacts with a plain GET, without an Authorization header
// (the stock Mender client sends none). [Cache.PresignURL] makes
//
//	https://HOST/api/devices/v1/download/<digest>?device=<id>&expire=<unix>&sig=<hex>
//
// where sig is the lowercase hex HMAC-SHA256, keyed by the first of
// [Options].DownloadKeys, of "<digest>|<expire>|<device>". The controller
// takes the key from the store's SharedSecret so every replica accepts
// every other's URLs; verification accepts any of DownloadKeys, so a key
// can be rotated in by adding it first and rotated out after the longest
// URL lifetime. [Cache.Handler] serves GET and HEAD of such URLs from the
// cache with Content-Length, ETag (the digest), Accept-Ranges and 206
// partial content for Range requests, so interrupted downloads resume. It
// serves only digests of artifacts offered now: a manifest deleted from
// Git, or an artifact that fails a check after a key change, stops
// downloading at once, even through URLs already issued.
package artifacts
