package deviceapi

import "github.com/labstack/echo/v5"

// Authenticated is the device API's authentication as middleware, for
// device routes served outside Register (the remote terminal's device
// websocket, package deviceconnect): the bearer token must be valid and
// the live commit must still accept the device; 401 otherwise.
func (a *API) Authenticated(next echo.HandlerFunc) echo.HandlerFunc { return a.authenticate(next) }

// AuthenticatedDevice returns the ID of the device that Authenticated admitted for
// this request (the token's subject, the ID the management API and
// mender-cli use); false when none was.
func AuthenticatedDevice(c *echo.Context) (string, bool) {
	s := sessionOf(c)
	if s == nil {
		return "", false
	}
	return s.claims.Subject, true
}
