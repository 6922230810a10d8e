// Package deviceconfig compiles the DeviceConfig manifests of one commit
// into what each device should run: the merged configuration of the
// manifests that target it, and its digest.
//
// # The model
//
// A DeviceConfig targets the whole fleet, groups, or devices, and sets
// values (in the clear in Git) and secrets (referenced from Git; see
// schema.ConfigSecret). A device's configuration merges every DeviceConfig
// that targets it, from the least specific level to the most specific:
//
//  1. the whole fleet (target all: true);
//  2. groups: a DeviceConfig whose groups include one the device is in, as
//     a static member or matched by the group's selector over the
//     device's identity and inventory;
//  3. the device: a DeviceConfig that names it.
//
// A key set at a more specific level replaces the key of a less specific
// one, whether either is a value or a secret. Within a level, manifests
// apply in order of metadata.name, so where two of one level set a key the
// one whose name sorts last wins. `gitfleet validate` refuses a commit in
// which that could happen with different values, so the order matters only
// as a guarantee that the result never depends on file layout or map order.
//
// The configuration is the flat JSON object of strings of package
// device/devconfig, and its digest devconfig.Digest of it. A device no
// DeviceConfig targets has the empty configuration.
//
// # Secrets
//
// [Compile] resolves every secret of the commit once: a file of
// [Options.SecretsDir], or an age ciphertext decrypted with
// [Options.Identities]. One trailing newline of the value is dropped (so
// `echo value > file` and `echo value | age -a -r R` both give "value"),
// and a value must be UTF-8 text of at most [MaxSecret] bytes. When a
// secret cannot be resolved, Compile fails with every such secret listed
// (file:line, manifest, key, and how to fix it): the controller refuses
// the commit rather than give devices half a configuration.
//
// Secret values leave a [Set] only through [Set.For], which the device
// API calls for the authenticated device the configuration belongs to.
// Every type here that holds a value prints, logs and encodes as a
// summary (fmt's verbs, slog, encoding/json), and [Set.Redact] replaces
// secret values in a configuration, such as the one a device reports,
// with [Redacted].
//
// # Cost
//
// Compiling costs one pass over the DeviceConfig manifests and one read or
// decryption per distinct secret. For merges once per distinct set of
// matching manifests and caches the result: ten thousand devices that
// share a configuration cost one merge, and each later call a few map
// look-ups and a copy of the values.
package deviceconfig
