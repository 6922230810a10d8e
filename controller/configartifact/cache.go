package configartifact

import (
	"fmt"

	"github.com/gitfleet/gitfleet/artifact"
	"github.com/gitfleet/gitfleet/device/devconfig"
	lru "github.com/hashicorp/golang-lru/v2"
)

// DefaultCacheSize is the number of artifacts a Cache keeps by default.
const DefaultCacheSize = 512

// maxCached is the largest artifact a Cache keeps; larger ones (a
// configuration of long values) are built again each time, so the cache
// stays within DefaultCacheSize × maxCached bytes.
const maxCached = 256 << 10

// Cache builds configuration artifacts and keeps the most recently used
// ones, by (digest, device type). It is safe for concurrent use.
type Cache struct {
	signer *artifact.Signer
	lru    *lru.Cache[cacheKey, []byte]
}

type cacheKey struct{ digest, deviceType string }

// NewCache returns a Cache of at most size artifacts (DefaultCacheSize when
// size <= 0) that signs with signer (nil: unsigned).
func NewCache(size int, signer *artifact.Signer) *Cache {
	if size <= 0 {
		size = DefaultCacheSize
	}
	c, _ := lru.New[cacheKey, []byte](size) // only fails for size <= 0
	return &Cache{signer: signer, lru: c}
}

// Signed reports whether the Cache's artifacts are signed.
func (c *Cache) Signed() bool { return c.signer != nil }

// Verifier returns the verifier of the signing key (whose Fingerprint a
// SigningKey in Git must match), or nil when artifacts are unsigned.
func (c *Cache) Verifier() *artifact.Verifier {
	if c.signer == nil {
		return nil
	}
	return c.signer.Verifier()
}

// Get returns the artifact of values for a device of deviceType. digest
// must be devconfig.Digest(values): it names the cached artifact, and a
// mismatch (checked when the artifact is built) is an error. Concurrent
// misses of one key may build it more than once; the result is the same.
func (c *Cache) Get(values map[string]string, digest, deviceType string) ([]byte, error) {
	k := cacheKey{digest, deviceType}
	if b, ok := c.lru.Get(k); ok {
		return b, nil
	}
	if got := devconfig.Digest(values); got != digest {
		return nil, fmt.Errorf("%w: %s given for values whose digest is %s", ErrDigest, digest, got)
	}
	b, err := Build(values, []string{deviceType}, c.signer)
	if err != nil {
		return nil, err
	}
	if len(b) <= maxCached {
		c.lru.Add(k, b)
	}
	return b, nil
}

// Cached returns the artifact of (digest, deviceType) if the Cache holds
// it.
func (c *Cache) Cached(digest, deviceType string) ([]byte, bool) {
	return c.lru.Get(cacheKey{digest, deviceType})
}

// Len returns how many artifacts the Cache holds.
func (c *Cache) Len() int { return c.lru.Len() }
