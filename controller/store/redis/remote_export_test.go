package redis

import "time"

// SetHealthEvery changes how often subscriptions ping, until the returned
// function restores it.
func SetHealthEvery(d time.Duration) (restore func()) {
	old := healthEvery
	healthEvery = d
	return func() { healthEvery = old }
}
