// Package deviceapi serves the device side of Gitfleet: the Mender device
// API, so that stock Mender clients (3.x, and the C++ 4.x clients, which
// speak the same API) and Gitfleet's own agent update through the
// controller.
//
// # The model
//
// Git decides which devices belong to the fleet (Device manifests); the
// store remembers what devices said; the rollout engine (controller/rollout)
// decides who installs what; the artifact cache (controller/artifacts)
// serves the bytes. This package holds no state of its own beyond caches
// keyed by the live Snapshot, so replicas behind a load balancer answer
// alike.
//
// A device authenticates with a request signed by its key
// (POST v1/authentication/auth_requests). If a Device manifest of the live
// Snapshot admits it (see the admission rule in admission.go: identity
// equal to the manifest's, and/or the key's fingerprint), it gets a token;
// otherwise it is recorded as pending and gets 401 until a commit accepts
// it (`gitfleet devices pending`, `gitfleet devices accept ID`). Every
// later call carries the token and is checked against the live Snapshot
// again, from the token's own claims and without a store read, so a device
// removed from Git gets 401 at its next call, whatever its token's expiry.
// Until the controller serves its first commit every device call gets 503
// (try later): nobody is judged, or marked pending, against no fleet.
//
// Two names. A device's ID is derived from its identity ([DeviceID]: the
// first 16 bytes of SHA-256 over the canonical id_data, hex): it exists
// before any manifest names the device, is the same on every replica, and
// keys the store's device record (identity, key fingerprint, inventory,
// the pending list) and the token's subject. Rollouts know a device by the
// name of the Device manifest that admits it (what groups and targets
// name, and what phase membership hashes), so store.Admit and store.Report
// use that name.
//
// Deployment IDs are "<rollout>-g<generation>" ([DeploymentID]), reversible
// without a lookup; see deployments.go.
//
// # Endpoints (under /api/devices)
//
//	POST  v1/authentication/auth_requests          200 + JWT (application/jwt) | 401 pending | 400 | 413
//	POST  v2/deployments/device/deployments/next   200 {id, artifact} | 204
//	POST  v1/deployments/device/deployments/next   (provides as a flat object)
//	GET   v1/deployments/device/deployments/next   ?artifact_name=&device_type=
//	PUT   v1/deployments/device/deployments/:id/status  204 | 409 aborted | 404
//	PUT   v1/deployments/device/deployments/:id/log     204
//	PUT   v1/inventory/device/attributes           200 (replace)
//	PATCH v1/inventory/device/attributes           200 (merge)
//
// The presigned artifact download (GET v1/download/<digest>?…) is the
// artifact cache's handler, mounted beside these by the controller.
//
// The stock client falls back from POST v2 to POST v1 to GET v1 when a
// call fails with any 4xx/5xx other than 401; all three are served. When
// the device already runs the artifact of the deployment it would get, the
// deployment is counted as a success and the poll answered 204, as the
// Mender server does; a client that reports "already-installed" itself is
// counted the same way.
//
// # The cost of a poll
//
// A poll of an accepted device needs no store round trip in the common
// case: the token is verified from a cache, admission is checked against
// the Snapshot, the device's inventory is read only when a rollout selects
// on inventory, the routed generation's progress is read at most once a
// second (progress.go), and whether the device has a deployment in it,
// and whether that finished, comes from the deployment index (index.go),
// which follows the store's change list. Admitting a device and recording
// a status stay atomic operations in the store; what any replica decides
// from its caches is at most a second behind the store, and a stale view
// can only delay an admission, never admit beyond a quota or twice.
//
// Every request body is bounded (MaxAuthBody, MaxNextBody, …), every
// decoder refuses what it does not understand with 400 and a reason, and
// nothing is written for a request that fails its checks.
package deviceapi
