package controller

import "github.com/labstack/echo/v5"

// registerDashboard mounts the read-only web dashboard.
func (c *Controller) registerDashboard(e *echo.Echo) {}
